package wsmw

import (
	"net"
	"net/http"

	"github.com/wsgate/wsgate/internal/hook"
)

func init() { hook.Relay = &relayOps{} }

// relayOps hands the operations of package internal/relay (forwarding frames
// between connections, for the proxy) to the rest of the module, without
// making them part of this package's API.
type relayOps struct{}

func (*relayOps) Forward(dst, src *Conn, h Header, splice bool, progress func()) error {
	return dst.forward(h, src, splice, progress)
}

func (*relayOps) Burst(c *Conn, b interface {
	Step() bool
	BeforeWait() bool
}) bool {
	return c.burst(b)
}

func (*relayOps) Flush(c *Conn) error               { return c.flush() }
func (*relayOps) FrameReady(c *Conn) bool           { return c.frameReady() }
func (*relayOps) Idle(c *Conn) bool                 { return c.idle() }
func (*relayOps) ControlPayload(c *Conn) []byte     { return c.controlPayload() }
func (*relayOps) CloseSent(c *Conn) bool            { return c.closeSent() }
func (*relayOps) CloseReceived(c *Conn) *CloseError { return c.closeReceived() }
func (*relayOps) NetConn(c *Conn) net.Conn          { return c.nc }
func (*relayOps) Drained(c *Conn) <-chan struct{}   { return c.drained() }

func (*relayOps) WriteFrameInPlace(c *Conn, h Header, payload []byte) error {
	return c.writeFrameInPlace(h, payload)
}

func (*relayOps) SendClose(c *Conn, code StatusCode, reason string) error {
	return c.sendClose(code, reason)
}

func (*relayOps) Inflate(c *Conn, dst, compressed []byte) ([]byte, error) {
	return c.inflate(dst, compressed)
}

func (*relayOps) CheckDeflateOffer(o ExtensionOffer) error { return checkDeflateOffer(o) }

func (*relayOps) CheckDeflateAnswer(offer, answer ExtensionOffer) (DeflateParams, error) {
	return checkDeflateAnswer(offer, answer)
}

func (*relayOps) RefuseHandshake(w http.ResponseWriter, r *http.Request, err error) {
	refuseHandshake(w, r, err)
}

func (*relayOps) EndStream(c *Conn) { c.endStream() }
