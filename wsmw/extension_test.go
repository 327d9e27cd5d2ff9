package wsmw_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate/wsmw"
)

type paramList = []wsmw.ExtensionParam

func TestParseExtensions_Grammar(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  []wsmw.ExtensionOffer
	}{
		{
			name:  "SeveralOffers_BareAndValuedParams",
			lines: []string{"permessage-deflate; client_max_window_bits, permessage-deflate; server_no_context_takeover; client_max_window_bits=10"},
			want: []wsmw.ExtensionOffer{
				{Name: "permessage-deflate", Params: paramList{{Name: "client_max_window_bits"}}},
				{Name: "permessage-deflate", Params: paramList{{Name: "server_no_context_takeover"}, {Name: "client_max_window_bits", Value: "10"}}},
			},
		},
		{
			name:  "QuotedValueUnquoted",
			lines: []string{`x-foo; x="10"`},
			want:  []wsmw.ExtensionOffer{{Name: "x-foo", Params: paramList{{Name: "x", Value: "10"}}}},
		},
		{
			name:  "QuotedValueKeepsSeparators",
			lines: []string{`x-foo; v="a,b;c", x-bar`},
			want: []wsmw.ExtensionOffer{
				{Name: "x-foo", Params: paramList{{Name: "v", Value: "a,b;c"}}},
				{Name: "x-bar"},
			},
		},
		{
			name:  "MultipleHeaderLinesInOrder",
			lines: []string{"permessage-deflate; client_max_window_bits", "x-a, x-b; p=1", "x-c"},
			want: []wsmw.ExtensionOffer{
				{Name: "permessage-deflate", Params: paramList{{Name: "client_max_window_bits"}}},
				{Name: "x-a"},
				{Name: "x-b", Params: paramList{{Name: "p", Value: "1"}}},
				{Name: "x-c"},
			},
		},
		{
			name:  "WhitespaceAroundTokens",
			lines: []string{"  x-a ;  p = 1 ;q ,x-b  "},
			want: []wsmw.ExtensionOffer{
				{Name: "x-a", Params: paramList{{Name: "p", Value: "1"}, {Name: "q"}}},
				{Name: "x-b"},
			},
		},
		{
			name:  "EmptyEntriesAndNamesSkipped",
			lines: []string{", ,x-a,; p=1, ;", ""},
			want:  []wsmw.ExtensionOffer{{Name: "x-a"}},
		},
		{
			name:  "EmptyParamNamesSkipped",
			lines: []string{"x-a; ; =3; p"},
			want:  []wsmw.ExtensionOffer{{Name: "x-a", Params: paramList{{Name: "p"}}}},
		},
		{name: "NoHeader", lines: nil, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, l := range tc.lines {
				h.Add("Sec-WebSocket-Extensions", l)
			}
			got := wsmw.ParseExtensions(h)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseExtensions(%q)\n got %#v\nwant %#v", tc.lines, got, tc.want)
			}
		})
	}
}

func TestFormatExtensions_RoundTrip(t *testing.T) {
	for _, s := range []string{
		"permessage-deflate; client_max_window_bits, permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
		"x-test",
		"x-a; p=1; q, x-b",
	} {
		offers := wsmw.ParseExtensions(http.Header{"Sec-Websocket-Extensions": {s}})
		if got := wsmw.FormatExtensions(offers); got != s {
			t.Errorf("FormatExtensions(ParseExtensions(%q)) = %q", s, got)
		}
		again := wsmw.ParseExtensions(http.Header{"Sec-Websocket-Extensions": {wsmw.FormatExtensions(offers)}})
		if !reflect.DeepEqual(again, offers) {
			t.Errorf("round trip of %q: %#v != %#v", s, again, offers)
		}
	}
	if got := wsmw.FormatExtensions(nil); got != "" {
		t.Errorf("FormatExtensions(nil) = %q, want empty", got)
	}
	if got := (wsmw.ExtensionOffer{Name: "x", Params: paramList{{Name: "a", Value: "1"}, {Name: "b"}}}).String(); got != "x; a=1; b" {
		t.Errorf("ExtensionOffer.String() = %q", got)
	}
}

// frameEvent is what the server's frame-level reader saw: a frame or an error.
type frameEvent struct {
	h   wsmw.Header
	p   []byte
	err error
}

// frameServer accepts with cfg, reports Conn.Extensions() and then every frame
// (or the final error) its NextFrame loop reads.
func frameServer(t *testing.T, cfg *wsmw.ServerConfig) (*httptest.Server, <-chan error, <-chan frameEvent, <-chan string) {
	t.Helper()
	events := make(chan frameEvent, 8)
	exts := make(chan string, 1)
	srv, errs := upgradeServer(t, cfg, func(c *wsmw.Conn, _ *http.Request) {
		exts <- c.Extensions()
		for {
			h, payload, err := c.NextFrame()
			if err != nil {
				events <- frameEvent{err: err}
				return
			}
			var p []byte
			if !h.OpCode.IsControl() {
				buf := make([]byte, h.Length)
				n, _ := payload.Read(buf)
				p = buf[:n]
			}
			events <- frameEvent{h: h, p: p}
		}
	})
	return srv, errs, events, exts
}

func TestUpgrade_ExtensionNegotiation(t *testing.T) {
	// xTest accepts only the fake extension "x-test", which uses RSV1.
	var mu sync.Mutex
	var seen [][]wsmw.ExtensionOffer
	xTest := func(r *http.Request, offers []wsmw.ExtensionOffer) ([]wsmw.ExtensionOffer, byte) {
		mu.Lock()
		seen = append(seen, offers)
		mu.Unlock()
		for _, o := range offers {
			if o.Name == "x-test" {
				return []wsmw.ExtensionOffer{{Name: "x-test"}}, wsmw.RSV1
			}
		}
		return nil, 0
	}
	tests := []struct {
		name       string
		negotiator wsmw.ExtensionNegotiator
		offer      string // "" sends no Sec-WebSocket-Extensions
		wantHeader string // "" means no header
		rsv        byte   // RSV bits of the data frame the client then sends
		wantFail   bool   // the frame must fail the connection with 1002
	}{
		{name: "NegotiatedRSV1Accepted", negotiator: xTest, offer: "permessage-deflate, x-test; a=1",
			wantHeader: "x-test", rsv: wsmw.RSV1},
		{name: "NegotiatedRSV1_PlainFramesStillAccepted", negotiator: xTest, offer: "x-test",
			wantHeader: "x-test", rsv: 0},
		{name: "NegotiatedRSV1_RSV2FailsWith1002", negotiator: xTest, offer: "x-test",
			wantHeader: "x-test", rsv: wsmw.RSV2, wantFail: true},
		{name: "NegotiatedRSV1_RSV3FailsWith1002", negotiator: xTest, offer: "x-test",
			wantHeader: "x-test", rsv: wsmw.RSV3, wantFail: true},
		{name: "NegotiatedRSV1_RSV1and2FailsWith1002", negotiator: xTest, offer: "x-test",
			wantHeader: "x-test", rsv: wsmw.RSV1 | wsmw.RSV2, wantFail: true},
		{name: "NegotiatorDeclines_NoHeader_RSV1Fails", negotiator: xTest, offer: "permessage-deflate",
			rsv: wsmw.RSV1, wantFail: true},
		{name: "NoNegotiator_OffersIgnored_RSV1Fails", offer: "x-test, permessage-deflate; client_max_window_bits",
			rsv: wsmw.RSV1, wantFail: true},
		{name: "NoOffer_NegotiatorNotCalled_NoHeader", negotiator: xTest, rsv: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			srv, errs, events, exts := frameServer(t, &wsmw.ServerConfig{Extensions: tc.negotiator, CloseTimeout: 2 * time.Second})
			var offers []string
			if tc.offer != "" {
				offers = append(offers, tc.offer)
			}
			resp, nc, br := upgradeWith(t, srv, errs, "Sec-WebSocket-Extensions", offers...)
			wantOneValue(t, resp.Header, "Sec-WebSocket-Extensions", tc.wantHeader)
			if got := <-exts; got != tc.wantHeader {
				t.Errorf("Conn.Extensions() = %q, want %q", got, tc.wantHeader)
			}
			mu.Lock()
			calls := seen
			mu.Unlock()
			if tc.negotiator != nil && tc.offer != "" {
				want := wsmw.ParseExtensions(http.Header{"Sec-Websocket-Extensions": {tc.offer}})
				if len(calls) != 1 || !reflect.DeepEqual(calls[0], want) {
					t.Errorf("negotiator saw %#v, want one call with %#v", calls, want)
				}
			} else if len(calls) != 0 {
				t.Errorf("negotiator called %d times without offers", len(calls))
			}

			if _, err := nc.Write(clientFrame(true, tc.rsv, wsmw.OpText, []byte("abc"))); err != nil {
				t.Fatal(err)
			}
			if tc.wantFail {
				// The server fails the connection: a 1002 close on the wire. Answer it as
				// a client would; the server must then end at once with a *FailError.
				expectClose(t, br, wsmw.StatusProtocolError)
				if _, err := nc.Write(clientFrame(true, 0, wsmw.OpClose, wsmw.AppendClosePayload(nil, wsmw.StatusProtocolError, ""))); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			var ev frameEvent
			select {
			case ev = <-events:
			case <-time.After(5 * time.Second):
				t.Fatal("server read nothing")
			}
			if !tc.wantFail {
				if ev.err != nil {
					t.Fatalf("server NextFrame error %v, want the frame", ev.err)
				}
				if ev.h.Rsv != tc.rsv || ev.h.OpCode != wsmw.OpText || string(ev.p) != "abc" {
					t.Fatalf("server got %+v %q, want text rsv=%#x \"abc\"", ev.h, ev.p, tc.rsv)
				}
				return
			}
			var fe *wsmw.FailError
			if !errors.As(ev.err, &fe) || fe.Code != wsmw.StatusProtocolError || !errors.Is(ev.err, wsmw.ErrProtocol) {
				t.Fatalf("server error = %v, want *FailError 1002 wrapping ErrProtocol", ev.err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("server returned %v after the client's close answer: the drain missed it", d)
			}
		})
	}
}
