package wsmw

import (
	"fmt"
	"math/rand/v2"
	"sync"
)

// writeChunk and smallChunk are the payload sizes of the pooled buffers a
// client masks payloads through, without touching the caller's bytes.
const (
	writeChunk = 64 << 10
	smallChunk = 512
)

// writeBuf and smallBuf hold a frame header and a chunk of payload, so a frame
// of up to their chunk size goes out in a single write.
type (
	writeBuf [MaxHeaderSize + writeChunk]byte
	smallBuf [MaxHeaderSize + smallChunk]byte
)

var (
	writeBufPool = sync.Pool{New: func() any { return new(writeBuf) }}
	smallBufPool = sync.Pool{New: func() any { return new(smallBuf) }}
)

// newMaskKey returns a fresh masking key (RFC 6455 §5.3). The runtime's ChaCha8
// generator behind math/rand/v2 is seeded from the OS and unpredictable to a peer,
// which is what masking needs, at a fraction of the cost of crypto/rand.
func newMaskKey() [4]byte {
	var k [4]byte
	u := rand.Uint32()
	k[0], k[1], k[2], k[3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	return k
}

// WriteFrame writes one frame: h's Fin, Rsv and OpCode with payload. Length and
// masking are set by the connection's role (a client masks with a fresh key; the
// payload slice is not modified). Frames from concurrent callers never
// interleave, so control frames can go between the fragments of a message.
// RFC 6455 decides what may be sent: a control frame is final and carries at
// most 125 bytes, RSV bits need a negotiated extension (ErrBadWrite otherwise);
// after a close frame nothing more is sent (ErrCloseSent).
func (c *Conn) WriteFrame(h Header, payload []byte) error {
	return c.writeFrame(h, payload, false)
}

// writeFrameInPlace is WriteFrame for a payload the caller gives up: a client masks
// it in place instead of copying it. A proxy forwarding to an upstream uses it.
func (c *Conn) writeFrameInPlace(h Header, payload []byte) error {
	return c.writeFrame(h, payload, true)
}

func (c *Conn) checkWrite(h *Header) error {
	switch {
	case !h.OpCode.valid():
		return fmt.Errorf("%w: opcode %v", ErrBadWrite, h.OpCode)
	case h.OpCode.IsControl() && (h.Length > maxControlPayload || !h.Fin):
		return fmt.Errorf("%w: control frames are unfragmented and carry at most 125 bytes", ErrBadWrite)
	case h.Rsv&^c.rsvAllowed != 0:
		return fmt.Errorf("%w: RSV bits not negotiated", ErrBadWrite)
	}
	return nil
}

// lockWrite takes the frame lock and reports the sticky write state. Frames
// ForwardFrame gathered are written first, so frames keep their order.
func (c *Conn) lockWrite(op OpCode) error {
	if err := c.lockWriteBatch(op); err != nil {
		return err
	}
	if c.batch != nil {
		if err := c.flushLocked(); err != nil {
			c.wmu.Unlock()
			return err
		}
	}
	return nil
}

// lockWriteBatch is lockWrite without writing the batch, for ForwardFrame.
func (c *Conn) lockWriteBatch(op OpCode) error {
	c.wmu.Lock()
	switch {
	case c.writeErr != nil:
		err := c.writeErr
		c.wmu.Unlock()
		return err
	case c.wsent.Load():
		c.wmu.Unlock()
		return ErrCloseSent
	case c.closed.Load():
		c.wmu.Unlock()
		return ErrClosed
	}
	if op == OpClose {
		c.wsent.Store(true)
	}
	return nil
}

// wrote records a write error; the stream is then unusable and the connection is closed.
func (c *Conn) wrote(err error) error {
	if err != nil && c.writeErr == nil {
		c.writeErr = err
		c.nc.Close()
	}
	return err
}

func (c *Conn) writeFrame(h Header, payload []byte, inPlace bool) error {
	h.Length = int64(len(payload))
	h.Masked = c.client
	if err := c.checkWrite(&h); err != nil {
		return err
	}
	if err := c.lockWrite(h.OpCode); err != nil {
		return err
	}
	defer c.wmu.Unlock()
	if c.client {
		h.Mask = newMaskKey()
	}
	hdr := AppendHeader(c.whdr[:0], h)
	if !c.client || inPlace {
		if c.client {
			Mask(h.Mask, 0, payload)
		}
		if len(payload) == 0 {
			_, err := c.nc.Write(hdr)
			return c.wrote(err)
		}
		// One vectored write for header and payload; wv lives in the Conn so it does not escape per call.
		c.wbufs[0], c.wbufs[1] = hdr, payload
		c.wv = c.wbufs[:]
		_, err := c.writev()
		c.wbufs[0], c.wbufs[1] = nil, nil
		return c.wrote(err)
	}
	return c.writeMasked(hdr, payload, h.Mask)
}

// writeMasked writes hdr and payload masked with key, leaving payload as it
// is: through a pooled buffer, in chunks of at most writeChunk bytes. A
// payload of up to smallChunk bytes (a close, a ping, a short message) takes
// a small buffer, so that many connections closing at once do not each hold
// a large one.
func (c *Conn) writeMasked(hdr, payload []byte, key [4]byte) error {
	if len(payload) <= smallChunk {
		bp := smallBufPool.Get().(*smallBuf)
		defer smallBufPool.Put(bp)
		return c.writeMaskedThrough(bp[:], hdr, payload, key)
	}
	bp := writeBufPool.Get().(*writeBuf)
	defer writeBufPool.Put(bp)
	return c.writeMaskedThrough(bp[:], hdr, payload, key)
}

// writeMaskedThrough is writeMasked through buf.
func (c *Conn) writeMaskedThrough(buf, hdr, payload []byte, key [4]byte) error {
	n := copy(buf, hdr)
	pos := 0
	for {
		k := copy(buf[n:], payload)
		pos = Mask(key, pos, buf[n:n+k])
		payload = payload[k:]
		if _, err := c.nc.Write(buf[:n+k]); err != nil {
			return c.wrote(err)
		}
		if len(payload) == 0 {
			return nil
		}
		n = 0
	}
}

// writeControl writes a control frame (ping, pong or close) of at most 125 bytes.
func (c *Conn) writeControl(op OpCode, payload []byte) error {
	return c.writeFrame(Header{Fin: true, OpCode: op}, payload, false)
}

// Ping sends a ping with payload (at most 125 bytes).
func (c *Conn) Ping(payload []byte) error { return c.writeControl(OpPing, payload) }

// writeMessage writes a whole message as one frame, compressed when
// permessage-deflate is in effect and p reaches the threshold. op is OpText or OpBinary.
func (c *Conn) writeMessage(op OpCode, p []byte) error {
	if !op.IsData() {
		return fmt.Errorf("%w: a message is text or binary, not %v", ErrBadWrite, op)
	}
	c.msgMu.Lock()
	defer c.msgMu.Unlock()
	if c.pmd.compresses(len(p)) {
		return c.pmd.writeMessage(c, op, p)
	}
	return c.writeFrame(Header{Fin: true, OpCode: op}, p, false)
}
