package wsmw

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
)

// RFC 7616 §3.9.1: the example challenge, answered with a fixed cnonce.
const (
	rfcRealm  = "http-auth@example.org"
	rfcNonce  = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
	rfcOpaque = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
	rfcCnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
)

func rfcChallenge(alg string) string {
	return `Digest realm="` + rfcRealm + `", qop="auth, auth-int", algorithm=` + alg +
		`, nonce="` + rfcNonce + `", opaque="` + rfcOpaque + `"`
}

func TestDigestAuthorization_RFCExamples(t *testing.T) {
	cases := []struct {
		name       string
		challenges []string
		user, pass string
		uri        string
		cnonce     string
		want       string
	}{
		{"RFC7616_3.9.1_MD5", []string{rfcChallenge("MD5")}, "Mufasa", "Circle of Life", "/dir/index.html", rfcCnonce,
			`Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=MD5, ` +
				`nonce="` + rfcNonce + `", nc=00000001, cnonce="` + rfcCnonce + `", qop=auth, ` +
				`response="8ca523f5e9506fed4657c9700eebdbec", opaque="` + rfcOpaque + `"`},
		{"RFC7616_3.9.1_SHA256", []string{rfcChallenge("SHA-256")}, "Mufasa", "Circle of Life", "/dir/index.html", rfcCnonce,
			`Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, ` +
				`nonce="` + rfcNonce + `", nc=00000001, cnonce="` + rfcCnonce + `", qop=auth, ` +
				`response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", opaque="` + rfcOpaque + `"`},
		{"RFC7616_3.9.1_StrongestOfTwoChallenges", []string{rfcChallenge("MD5"), rfcChallenge("SHA-256")}, "Mufasa", "Circle of Life", "/dir/index.html", rfcCnonce,
			`Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, ` +
				`nonce="` + rfcNonce + `", nc=00000001, cnonce="` + rfcCnonce + `", qop=auth, ` +
				`response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", opaque="` + rfcOpaque + `"`},
		{"RFC2617_3.5_MD5NoAlgorithm", []string{`Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"`},
			"Mufasa", "Circle Of Life", "/dir/index.html", "0a4f113b",
			`Digest username="Mufasa", realm="testrealm@host.com", uri="/dir/index.html", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", ` +
				`nc=00000001, cnonce="0a4f113b", qop=auth, response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"`},
		{"RFC2069_NoQopOmitsNcAndCnonce", []string{`Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"`},
			"Mufasa", "Circle Of Life", "/dir/index.html", "ignored",
			`Digest username="Mufasa", realm="testrealm@host.com", uri="/dir/index.html", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", ` +
				`response="` + refDigestLegacy(md5.New, "Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093") + `"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, ok := strongestDigest(parseChallenges(tc.challenges))
			if !ok {
				t.Fatal("no usable challenge")
			}
			if got := d.authorization(tc.user, tc.pass, "GET", tc.uri, tc.cnonce); got != tc.want {
				t.Fatalf("authorization\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestParseAuthChallenges_RFC9110Grammar(t *testing.T) {
	got := parseChallenges([]string{`Newauth realm="apps", type=1,  title="Login to \"apps\"", Basic realm="simple"`, `Bearer`})
	want := []authChallenge{
		{"newauth", map[string]string{"realm": "apps", "type": "1", "title": `Login to "apps"`}},
		{"basic", map[string]string{"realm": "simple"}},
		{"bearer", map[string]string{}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

func TestParseDigest_UnusableChallenges(t *testing.T) {
	for _, h := range []string{
		`Digest realm="r", qop="auth"`,                                // no nonce
		`Digest realm="r", nonce="n", algorithm=SHA-1`,                // unknown algorithm
		`Digest realm="r", nonce="n", qop="auth-conf"`,                // no supported qop
		`Digest realm="r", nonce="n", algorithm=MD5-sess`,             // -sess without qop has no cnonce
		`Basic realm="r", nonce="n"`,                                  // not Digest
		`Digest realm="r", nonce="n", algorithm=SHA-256-sess, qop=""`, // empty qop list
	} {
		if d, ok := strongestDigest(parseChallenges([]string{h})); ok {
			t.Errorf("%s: accepted as %+v", h, d)
		}
	}
}

func TestDigestAuthorization_QuotingAndUsername(t *testing.T) {
	d, _ := strongestDigest(parseChallenges([]string{`Digest realm="a \"quoted\" realm", nonce="n", qop=auth, algorithm=SHA-256`}))
	got := d.authorization(`Jäsøn "Doe"`, "pw", "GET", "/", "c")
	for _, part := range []string{`realm="a \"quoted\" realm"`, `username*=UTF-8''J%C3%A4s%C3%B8n%20%22Doe%22,`} {
		if !strings.Contains(got, part) {
			t.Errorf("%s: missing %s", got, part)
		}
	}
	d.userhash = true
	got = d.authorization("Mufasa", "pw", "GET", "/", "c")
	if want := `username="` + refHash(sha256.New, "Mufasa:"+d.realm) + `"`; !strings.Contains(got, want) || !strings.HasSuffix(got, ", userhash=true") {
		t.Errorf("userhash: %s", got)
	}
}

func refHash(h func() hash.Hash, s string) string {
	hh := h()
	hh.Write([]byte(s))
	return hex.EncodeToString(hh.Sum(nil))
}

// refDigest is RFC 7616 §3.4.1 written out independently of auth.go, for qop=auth.
func refDigest(h func() hash.Hash, sess bool, user, realm, pass, method, uri, nonce, nc, cnonce string) string {
	ha1 := refHash(h, user+":"+realm+":"+pass)
	if sess {
		ha1 = refHash(h, ha1+":"+nonce+":"+cnonce)
	}
	return refHash(h, ha1+":"+nonce+":"+nc+":"+cnonce+":auth:"+refHash(h, method+":"+uri))
}

// refDigestLegacy is the RFC 2069 response (no qop).
func refDigestLegacy(h func() hash.Hash, user, realm, pass, method, uri, nonce string) string {
	return refHash(h, refHash(h, user+":"+realm+":"+pass)+":"+nonce+":"+refHash(h, method+":"+uri))
}

var authParamRE = regexp.MustCompile(`([A-Za-z*]+)=("(?:[^"\\]|\\.)*"|[^,\s]+)`)

// authParams parses an Authorization: Digest value, independently of auth.go.
func authParams(v string) map[string]string {
	out := map[string]string{}
	for _, m := range authParamRE.FindAllStringSubmatch(strings.TrimPrefix(v, "Digest "), -1) {
		out[m[1]] = strings.Trim(m[2], `"`)
	}
	return out
}

// authServer answers 401 with challenge until a request's Authorization passes check;
// it then upgrades and closes. It counts requests.
func authServer(t *testing.T, challenge []string, check func(r *http.Request) bool) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if !check(r) {
			w.Header()["Www-Authenticate"] = challenge
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		c, err := Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c.Close(StatusNormalClosure, "")
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// digestCheck verifies a Digest Authorization for user/pass against the nonce and opaque of the challenge.
func digestCheck(t *testing.T, h func() hash.Hash, alg string, sess bool, user, pass string) func(r *http.Request) bool {
	return func(r *http.Request) bool {
		a, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Digest ")
		if !ok {
			return false
		}
		p := authParams(a)
		want := map[string]string{"username": user, "realm": "test", "uri": r.RequestURI, "algorithm": alg,
			"nonce": "abc123", "nc": "00000001", "qop": "auth", "opaque": "xyz"}
		for k, v := range want {
			if p[k] != v {
				t.Errorf("Authorization %s = %q, want %q", k, p[k], v)
				return false
			}
		}
		return p["cnonce"] != "" && p["response"] == refDigest(h, sess, user, "test", pass, r.Method, r.RequestURI, "abc123", "00000001", p["cnonce"])
	}
}

func digestChallengeFor(alg string) string {
	return `Digest realm="test", qop="auth", algorithm=` + alg + `, nonce="abc123", opaque="xyz"`
}

func TestDial_DigestAuth(t *testing.T) {
	cases := []struct {
		name      string
		challenge []string
		h         func() hash.Hash
		alg       string
		sess      bool
		creds     *Credentials
		wantErr   error
		wantHits  int32
	}{
		{"MD5", []string{digestChallengeFor("MD5")}, md5.New, "MD5", false, &Credentials{Username: "Mufasa", Password: "Circle of Life"}, nil, 2},
		{"SHA256", []string{digestChallengeFor("SHA-256")}, sha256.New, "SHA-256", false, &Credentials{Username: "Mufasa", Password: "Circle of Life"}, nil, 2},
		{"SHA256Sess", []string{digestChallengeFor("SHA-256-sess")}, sha256.New, "SHA-256-sess", true, &Credentials{Username: "Mufasa", Password: "Circle of Life", Scheme: AuthDigest}, nil, 2},
		{"StrongestOfSeveralChallenges", []string{digestChallengeFor("MD5"), `Basic realm="test"`, digestChallengeFor("SHA-256")}, sha256.New, "SHA-256", false, &Credentials{Username: "Mufasa", Password: "Circle of Life"}, nil, 2},
		{"WrongPasswordIsUnauthorizedAfterOneRetry", []string{digestChallengeFor("SHA-256")}, sha256.New, "SHA-256", false, &Credentials{Username: "Mufasa", Password: "wrong"}, ErrUnauthorized, 2},
		{"BasicOnlyCredentialsDoNotAnswerDigest", []string{digestChallengeFor("SHA-256")}, sha256.New, "SHA-256", false, &Credentials{Username: "Mufasa", Password: "Circle of Life", Scheme: AuthBasic}, ErrUnauthorized, 1},
		{"NoCredentialsIsUnauthorized", []string{digestChallengeFor("MD5")}, md5.New, "MD5", false, nil, ErrUnauthorized, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, hits := authServer(t, tc.challenge, digestCheck(t, tc.h, tc.alg, tc.sess, "Mufasa", "Circle of Life"))
			c, resp, err := Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/chat?room=1", &DialConfig{Credentials: tc.creds})
			if c != nil {
				c.Close(StatusNormalClosure, "")
			}
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				var he *HandshakeError
				if !errors.As(err, &he) || he.Status != http.StatusUnauthorized || resp == nil || resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("err = %v resp = %v, want a 401 *HandshakeError and response", err, resp)
				}
			}
			if n := hits.Load(); n != tc.wantHits {
				t.Fatalf("%d requests, want %d", n, tc.wantHits)
			}
		})
	}
}

func TestDial_BasicAuth(t *testing.T) {
	check := func(r *http.Request) bool {
		u, p, ok := r.BasicAuth()
		return ok && u == "alice" && p == "s3cret:x"
	}
	cases := []struct {
		name      string
		userinfo  string
		creds     *Credentials
		challenge []string
		wantErr   error
		wantHits  int32
	}{
		{"URLUserinfoAnswersBasicChallenge", "alice:s3cret%3Ax@", nil, []string{`Basic realm="test"`}, nil, 2},
		{"CredentialsAnswerBasicChallenge", "", &Credentials{Username: "alice", Password: "s3cret:x"}, []string{`Basic realm="test"`}, nil, 2},
		{"AuthBasicIsPreemptive", "", &Credentials{Username: "alice", Password: "s3cret:x", Scheme: AuthBasic}, []string{`Basic realm="test"`}, nil, 1},
		{"CredentialsOverrideURLUserinfo", "mallory:x@", &Credentials{Username: "alice", Password: "s3cret:x", Scheme: AuthBasic}, []string{`Basic realm="test"`}, nil, 1},
		{"WrongPasswordIsUnauthorizedAfterOneRetry", "alice:nope@", nil, []string{`Basic realm="test"`}, ErrUnauthorized, 2},
		{"PreemptiveWrongPasswordIsNotRetried", "", &Credentials{Username: "alice", Password: "nope", Scheme: AuthBasic}, []string{`Basic realm="test"`}, ErrUnauthorized, 1},
		{"DigestOnlyCredentialsDoNotAnswerBasic", "", &Credentials{Username: "alice", Password: "s3cret:x", Scheme: AuthDigest}, []string{`Basic realm="test"`}, ErrUnauthorized, 1},
		{"NoChallengeIsUnauthorized", "alice:s3cret%3Ax@", nil, nil, ErrUnauthorized, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, hits := authServer(t, tc.challenge, check)
			u := "ws://" + tc.userinfo + strings.TrimPrefix(srv.URL, "http://") + "/"
			c, resp, err := Dial(context.Background(), u, &DialConfig{Credentials: tc.creds})
			if c != nil {
				c.Close(StatusNormalClosure, "")
			}
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil && (resp == nil || resp.StatusCode != http.StatusUnauthorized) {
				t.Fatalf("resp = %v, want the 401", resp)
			}
			if n := hits.Load(); n != tc.wantHits {
				t.Fatalf("%d requests, want %d", n, tc.wantHits)
			}
		})
	}
}
