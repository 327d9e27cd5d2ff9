package caddymodule

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"testing"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/internal/testkit/caddytest"
)

// Upstream TLS the Caddy way, end to end: reverse_proxy's transport http
// block (and the flat shorthand) trusts a private CA, names the server,
// presents a client certificate or skips verification; bare host:port
// upstreams are dialed with wss:// once TLS is set; an upstream that cannot
// be verified is a 502 naming the TLS handshake.
func TestUpstreamTLSThroughCaddy(t *testing.T) {
	ca := newTestCA(t)
	ipCert, _, _ := ca.issue(t, "ip", false, "127.0.0.1")
	nameCert, _, _ := ca.issue(t, "named", false, "up.internal")
	_, clientCert, clientKey := ca.issue(t, "client", true, "wsgate")
	plain := testkit.StartNamed(t, "ip", &tls.Config{Certificates: []tls.Certificate{ipCert}})
	mutual := testkit.StartNamed(t, "mutual", &tls.Config{Certificates: []tls.Certificate{nameCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool()})
	port := testkit.FreePort(t)
	caddytest.Load(t, caddytest.Global+fmt.Sprintf(`:%d {
	ws /trusted/* %[2]s {
		transport http {
			tls_trust_pool file %[4]s
		}
	}
	ws /bare/* %[3]s {
		transport http {
			tls
			tls_trust_pool file %[4]s
		}
	}
	ws /untrusted/* %[2]s
	ws /insecure/* %[3]s {
		transport http {
			tls_insecure_skip_verify
		}
	}
	ws /flat_insecure/* %[3]s {
		tls_insecure_skip_verify
	}
	ws /mtls/* %[5]s {
		transport http {
			tls_server_name up.internal
			tls_trust_pool file %[4]s
			tls_client_auth %[6]s %[7]s
		}
	}
	ws /flat_mtls/* %[5]s {
		tls_server_name up.internal
		tls_trusted_ca_certs %[4]s
		tls_client_auth %[6]s %[7]s
	}
	ws /no_client_cert/* %[5]s {
		transport http {
			tls_server_name up.internal
			tls_trust_pool file %[4]s
		}
	}
	ws /wrong_name/* %[5]s {
		transport http {
			tls_trust_pool file %[4]s
			tls_client_auth %[6]s %[7]s
		}
	}
	respond "fallback"
}
`, port, plain.WS, plain.Addr, ca.File, mutual.Addr, clientCert, clientKey))
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	for path, want := range map[string]string{
		"/trusted/": "ip", "/bare/": "ip", "/insecure/": "ip", "/flat_insecure/": "ip",
		"/mtls/": "mutual", "/flat_mtls/": "mutual",
	} {
		t.Run(path, func(t *testing.T) {
			if name, resp := testkit.NamedWS(t, nil, "ws://"+addr+path, nil); name != want {
				t.Fatalf("%q %v, want a session with %s", name, resp, want)
			}
		})
	}
	for path, wantBody := range map[string]string{
		"/untrusted/":      "upstream TLS handshake failed\n",
		"/wrong_name/":     "upstream TLS handshake failed\n",
		"/no_client_cert/": "", // TLS 1.3: the upstream refuses once the client's side of the handshake is done
	} {
		t.Run(path, func(t *testing.T) {
			resp, body := refusedWS(t, addr, path)
			if resp.StatusCode != http.StatusBadGateway || wantBody != "" && body != wantBody {
				t.Fatalf("got %d %q, want 502 %q", resp.StatusCode, body, wantBody)
			}
		})
	}
	for _, u := range []*testkit.Named{plain, mutual} {
		for _, s := range u.Seen() {
			if !s.TLS {
				t.Errorf("%s served %s without TLS", u.Name, s.URI)
			}
		}
	}
}

// transport http's tls options adapt, in the ws block, to the JSON
// reverse_proxy's transport gets for the same block: reverse_proxy's parser.
func TestTransportTLSAdaptsAsReverseProxys(t *testing.T) {
	for _, block := range []string{
		"tls",
		"tls_server_name up.internal",
		"tls_trust_pool file ca.pem other.pem",
		"tls_trusted_ca_certs ca.pem",
		"tls_client_auth c.pem k.pem",
		"tls_insecure_skip_verify",
		"tls_server_name up.internal\ntls_trust_pool file ca.pem\ntls_client_auth c.pem k.pem\ntls_insecure_skip_verify",
	} {
		t.Run(block, func(t *testing.T) {
			ws := adaptHandler(t, fmt.Sprintf("ws h:1 {\ntransport http {\n%s\n}\n}", block))
			out, err := adapt(fmt.Sprintf(":8080 {\nreverse_proxy h:1 {\ntransport http {\n%s\n}\n}\n}\n", block))
			if err != nil {
				t.Fatal(err)
			}
			rps := findHandlers(decode(t, out), "reverse_proxy")
			if len(rps) != 1 {
				t.Fatalf("%d reverse_proxy handlers in %s", len(rps), out)
			}
			want := rps[0]["transport"].(map[string]any)["tls"]
			if !reflect.DeepEqual(ws["tls"], want) {
				g, _ := json.Marshal(ws["tls"])
				w, _ := json.Marshal(want)
				t.Errorf("ws tls %s, reverse_proxy's transport tls %s", g, w)
			}
		})
	}
}
