package wsmw

// Helpers of the HTTP/2 and HTTP/3 tests (stream_test.go): clients of the
// servers of internal/streamtest, through wsmw's Dial or as raw streams that
// see how the server ends them.

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/streamtest"
)

// TestMain turns on extended CONNECT in net/http's HTTP/2 server for the
// tests on streams (see streamtest.Main).
func TestMain(m *testing.M) { streamtest.Main(m) }

// streamServer is a handler served over one protocol (see streamtest.Start).
type streamServer struct{ *streamtest.Server }

func startStream(t testing.TB, proto string, h http.Handler, configure ...func(*http.Server)) *streamServer {
	t.Helper()
	return &streamServer{streamtest.Start(t, proto, h, configure...)}
}

// dialWS opens a WebSocket to path on s with cfg's other settings.
func (s *streamServer) dialWS(t testing.TB, path string, cfg *DialConfig) *Conn {
	t.Helper()
	c, resp, err := s.dialErr(path, cfg)
	if err != nil {
		t.Fatalf("dial %s over %s: %v (response %v)", path, s.Proto, err, resp)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func (s *streamServer) dialErr(path string, cfg *DialConfig) (*Conn, *http.Response, error) {
	var dc DialConfig
	if cfg != nil {
		dc = *cfg
	}
	dc.HTTP2, dc.HTTP3 = s.Transports()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return Dial(ctx, s.URL+path, &dc)
}

// rawStream is a client WebSocket on a stream, written and read with the
// tests' raw frames.
type rawStream struct {
	st *streamtest.Stream
	br *bufio.Reader
}

// openRaw opens a raw WebSocket stream to path with hdr; it returns nil and
// the response when the answer is not a 200.
func (s *streamServer) openRaw(t testing.TB, path string, hdr http.Header) (*rawStream, *http.Response) {
	t.Helper()
	st, resp := s.Open(t, path, "websocket", hdr)
	if st == nil {
		return nil, resp
	}
	return &rawStream{st: st, br: bufio.NewReader(st)}, resp
}

// write sends raw bytes.
func (r *rawStream) write(t testing.TB, b []byte) {
	t.Helper()
	if _, err := r.st.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// readFrame reads one frame from the server, unmasked.
func (r *rawStream) readFrame() (Header, []byte, error) {
	h, err := ReadHeader(r.br)
	if err != nil {
		return h, nil, err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(r.br, p); err != nil {
		return h, nil, err
	}
	if h.Masked {
		Mask(h.Mask, 0, p)
	}
	return h, p, nil
}

// readClose reads frames until the server's close and returns its code.
func (r *rawStream) readClose(t testing.TB) StatusCode {
	t.Helper()
	for {
		h, p, err := r.readFrame()
		if err != nil {
			t.Fatalf("waiting for the server's close: %v", err)
		}
		if h.OpCode == OpClose {
			code, _, err := ParseClosePayload(p)
			if err != nil {
				t.Fatalf("close payload %q: %v", p, err)
			}
			return code
		}
	}
}

// ending reads the rest of the server's side of the stream and tells how it ended.
func (r *rawStream) ending(t testing.TB) streamtest.Ending {
	t.Helper()
	e, err := r.st.Ending(5 * time.Second)
	if err != nil {
		t.Fatalf("the stream ended with %v, neither in order nor reset", err)
	}
	return e
}
