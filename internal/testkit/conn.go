package testkit

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate/wsmw"
)

// DefaultMaxFrame is the largest frame a Conn reads unless its MaxFrame says otherwise.
const DefaultMaxFrame = 64 << 20

// Conn is a raw WebSocket endpoint over a network connection: frames are
// written and read by this package's codec, with no rule applied, so that a
// test can play a peer that misbehaves or check what another one sent.
type Conn struct {
	net.Conn
	R        *bufio.Reader // reads the connection; it may hold bytes read past the handshake
	Client   bool          // Send masks frames, as a client does
	MaxFrame int64         // the largest frame ReadFrame accepts; DefaultMaxFrame if 0
	Req      *http.Request // the opening handshake, on a RawServer's side

	wmu sync.Mutex
}

// NewConn wraps nc, read through br (a new reader if nil), in the client or server role.
func NewConn(nc net.Conn, br *bufio.Reader, client bool) *Conn {
	if br == nil {
		br = bufio.NewReader(nc)
	}
	return &Conn{Conn: nc, R: br, Client: client}
}

// ReadFrame reads one frame.
func (c *Conn) ReadFrame() (Frame, error) {
	max := c.MaxFrame
	if max == 0 {
		max = DefaultMaxFrame
	}
	return ReadFrame(c.R, max)
}

// ReadFrameTimeout reads one frame with a read deadline d from now.
func (c *Conn) ReadFrameTimeout(d time.Duration) (Frame, error) {
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	return c.ReadFrame()
}

// Send writes f; a client masks it, with a fresh key unless f.Key is set.
func (c *Conn) Send(f Frame) error {
	if c.Client {
		f.Masked = true
		if f.Key == ([4]byte{}) {
			f.Key = RandomKey()
		}
	}
	return c.SendRaw(f)
}

// SendRaw writes f exactly as it says (masked only if f.Masked).
func (c *Conn) SendRaw(f Frame) error { return c.WriteChopped(AppendFrame(nil, f), 0) }

// SendClose sends a close frame with code and reason.
func (c *Conn) SendClose(code int, reason string) error { return c.Send(CloseFrame(code, reason)) }

// WriteChopped writes b within 5 s, in pieces of chop bytes with a pause of
// 1 ms after each (all at once if chop is 0): a peer whose frames arrive in parts.
func (c *Conn) WriteChopped(b []byte, chop int) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if chop <= 0 {
		_, err := c.Write(b)
		return err
	}
	for len(b) > 0 {
		n := min(chop, len(b))
		if _, err := c.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
		time.Sleep(time.Millisecond)
	}
	return nil
}

// ReadUntilClose reads frames until a close frame (returned) or an error,
// within d; the frames read on the way are returned in seen.
func (c *Conn) ReadUntilClose(d time.Duration) (closeFrame *Frame, seen []Frame, err error) {
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	for {
		f, err := c.ReadFrame()
		if err != nil {
			return nil, seen, err
		}
		if f.Op == wsmw.OpClose {
			return &f, seen, nil
		}
		seen = append(seen, f)
	}
}

// WaitEOF reads (and drops) until the connection ends, within d; it reports
// whether the peer closed the connection (EOF or reset) rather than the time running out.
func (c *Conn) WaitEOF(d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	_, err := io.Copy(io.Discard, c.R)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// DialRaw performs a hand-written opening handshake with url (ws://host/path)
// and fails the test unless it gets a 101 with the right Sec-WebSocket-Accept.
// The connection is closed when the test ends.
func DialRaw(t testing.TB, url string) *Conn {
	t.Helper()
	host, path, _ := strings.Cut(strings.TrimPrefix(url, "ws://"), "/")
	c, resp, err := Handshake(host, "/"+path, nil)
	if err != nil {
		t.Fatalf("raw dial %s: %v", url, err)
	}
	if c == nil {
		t.Fatalf("raw dial %s: status %s", url, resp.Status)
	}
	t.Cleanup(func() { c.Close() })
	key := resp.Request.Header.Get("Sec-WebSocket-Key")
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != AcceptKey(key) {
		t.Fatalf("raw dial %s: Sec-WebSocket-Accept %q, want %q", url, got, AcceptKey(key))
	}
	return c
}
