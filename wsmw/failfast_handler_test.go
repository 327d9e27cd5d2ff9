package wsmw_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/testkit"
	"github.com/wsgate/wsgate/wsmw"
)

// failedRead is what a handler's Read returned, and how long after the start.
type failedRead struct {
	err error
	at  time.Time
}

// TestMiddlewareHandlerGetsFailErrorAtOnce: a wsmw.Handler reading a client
// that breaks the protocol has its *FailError at once, whether or not the
// client ever answers the 1002. Once the handler returns, Middleware's Close
// waits for the close handshake under way: a client that answers late has its
// close read (clean EOF, no reset); a silent one is hung up on after the
// close timeout. No goroutine outlives the connection.
func TestMiddlewareHandlerGetsFailErrorAtOnce(t *testing.T) {
	const closeTimeout = time.Second
	for _, answers := range []bool{false, true} {
		t.Run(map[bool]string{false: "silent client", true: "client answers late"}[answers], func(t *testing.T) {
			testkit.CheckGoroutines(t)
			got := make(chan failedRead, 1)
			h := wsmw.Middleware(func(c *wsmw.Conn, r *http.Request) {
				_, _, err := c.Read(context.Background(), nil)
				got <- failedRead{err, time.Now()}
			}, &wsmw.ServerConfig{CloseTimeout: closeTimeout})
			srv := httptest.NewServer(h(http.NotFoundHandler()))
			t.Cleanup(srv.Close)
			raw := testkit.DialRaw(t, testkit.WSURL(srv.URL))

			start := time.Now()
			raw.SendRaw(testkit.Binary([]byte("unmasked"))) // 1002: a client must mask
			r := testkit.Recv(t, got, 3*time.Second, "the handler's read")
			var fe *wsmw.FailError
			if !errors.As(r.err, &fe) || fe.Code != wsmw.StatusProtocolError {
				t.Fatalf("handler read %v, want a *FailError 1002", r.err)
			}
			if d := r.at.Sub(start); d > 100*time.Millisecond {
				t.Errorf("handler got its error after %v, want within 100ms (close timeout %v)", d, closeTimeout)
			}
			f, err := raw.ReadFrameTimeout(time.Second)
			if code, reason := f.CloseCode(); err != nil || f.Op != wsmw.OpClose || code != 1002 || reason != "unmasked frame from client" {
				t.Fatalf("client got %v %v, want the 1002 close", f, err)
			}
			if answers {
				// The handler has returned; the connection must stay open for the answer.
				if _, err := raw.ReadFrameTimeout(150 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("before the client answered: %v, want the connection still open", err)
				}
				raw.SendClose(1002, "")
			}
			raw.SetReadDeadline(time.Now().Add(closeTimeout + 2*time.Second))
			n, err := io.Copy(io.Discard, raw.R)
			d := time.Since(start)
			if err != nil || n != 0 {
				t.Errorf("client read %d more bytes and %v, want a clean EOF", n, err)
			}
			if answers && d > closeTimeout {
				t.Errorf("connection closed %v after the violation, want soon after the answer", d)
			}
			if !answers && (d < closeTimeout-50*time.Millisecond || d > closeTimeout+1500*time.Millisecond) {
				t.Errorf("connection closed %v after the violation, want about the close timeout (%v)", d, closeTimeout)
			}
		})
	}
}
