package wsmw

import (
	"context"
	"errors"
	"io"
	"slices"
	"time"
)

// nextDataFrame reads frames until a data frame arrives. Control frames are
// handled on the way; a close frame is answered with the same code and the
// connection closed, and the peer's *CloseError returned.
func (r *reader) nextDataFrame() (Header, error) {
	for {
		h, err := r.nextFrame()
		if err != nil {
			return h, err
		}
		switch h.OpCode {
		case OpClose:
			ce := r.c.closeRecv.Load()
			_ = r.c.writeClose(ce.Code, "")
			r.c.CloseNow()
			return h, ce
		case OpPing, OpPong:
			continue
		}
		return h, nil
	}
}

// AppendMessage reads the next whole message, appending its payload to dst, and
// returns its type. Control frames in between are handled (see NextFrame); the
// message size limit bounds what is appended. Passing a reused dst[:0] makes
// steady-state reads allocation-free.
func (c *Conn) AppendMessage(dst []byte) (OpCode, []byte, error) {
	c.rd.mu.Lock()
	defer c.rd.mu.Unlock()
	r := &c.rd
	if r.inMessage || r.remaining > 0 || c.pmd.streaming() {
		// A message read by NextReader was left unfinished: drop it.
		if err := r.skipMessage(); err != nil {
			return 0, dst, err
		}
	}
	h, err := r.nextDataFrame()
	if err != nil {
		return 0, dst, err
	}
	if h.OpCode == OpContinuation {
		return 0, dst, r.fail(StatusProtocolError, &protoErr{"continuation frame without a message in progress"})
	}
	op := h.OpCode
	if r.msgCompressed && c.pmd.inflates() {
		dst, err = c.pmd.appendMessage(r, op, dst)
		return op, dst, err
	}
	for {
		dst, err = r.appendPayload(dst)
		if err != nil {
			return op, dst, err
		}
		if h.Fin {
			return op, dst, nil
		}
		if h, err = r.nextDataFrame(); err != nil {
			return op, dst, err
		}
	}
}

// ReadMessage reads the next whole message into a new slice. See AppendMessage.
func (c *Conn) ReadMessage() (OpCode, []byte, error) { return c.AppendMessage(nil) }

// appendPayload appends the rest of the current frame's payload to dst.
func (r *reader) appendPayload(dst []byte) ([]byte, error) {
	need := int(r.remaining)
	// slices.Grow grows geometrically: a message of many small fragments is reassembled in linear time.
	dst = slices.Grow(dst, need)
	for r.remaining > 0 {
		n, err := r.readPayload(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err != nil && err != io.EOF {
			return dst, err
		}
	}
	return dst, nil
}

// skipMessage drops the rest of a partly read message.
func (r *reader) skipMessage() error {
	if r.c.pmd.streaming() {
		if err := r.c.pmd.finish(r); err != nil {
			return err
		}
	}
	for {
		if err := r.skipPayload(); err != nil {
			return err
		}
		if !r.inMessage {
			return nil
		}
		if _, err := r.nextDataFrame(); err != nil {
			return err
		}
	}
}

// NextReader returns the type of the next message and a reader for its payload,
// which streams across fragments and handles control frames between them. The
// reader is valid until the next call to NextReader or AppendMessage.
func (c *Conn) NextReader() (OpCode, io.Reader, error) {
	c.rd.mu.Lock()
	defer c.rd.mu.Unlock()
	r := &c.rd
	if r.inMessage || r.remaining > 0 || c.pmd.streaming() {
		if err := r.skipMessage(); err != nil {
			return 0, nil, err
		}
	}
	h, err := r.nextDataFrame()
	if err != nil {
		return 0, nil, err
	}
	if h.OpCode == OpContinuation {
		return 0, nil, r.fail(StatusProtocolError, &protoErr{"continuation frame without a message in progress"})
	}
	if r.msgCompressed && c.pmd.inflates() {
		return h.OpCode, c.pmd.nextReader(r, h.OpCode), nil
	}
	r.mr.done = false
	return h.OpCode, &r.mr, nil
}

// messageReader streams one message's payload across its frames.
type messageReader struct {
	c    *Conn
	done bool
}

func (m *messageReader) Read(p []byte) (int, error) {
	if m.done {
		return 0, io.EOF
	}
	r := &m.c.rd
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		n, err := r.readPayload(p)
		if n > 0 || (err != nil && err != io.EOF) {
			return n, err
		}
		if r.hdr.Fin {
			m.done = true
			return 0, io.EOF
		}
		if _, err := r.nextDataFrame(); err != nil {
			return 0, err
		}
	}
}

// aLongTimeAgo is a deadline in the past, used to interrupt a blocked read or write.
var aLongTimeAgo = time.Unix(1, 0)

// Read reads the next whole message like ReadMessage, returning when ctx ends.
// Cancellation interrupts the read and breaks the connection, like a deadline.
func (c *Conn) Read(ctx context.Context) (OpCode, []byte, error) {
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetReadDeadline(aLongTimeAgo) })
	op, p, err := c.ReadMessage()
	if !stop() && ctx.Err() != nil && err != nil {
		err = errors.Join(ctx.Err(), err)
	}
	return op, p, err
}

// Write writes a whole message like WriteMessage, returning when ctx ends.
// Cancellation interrupts the write and breaks the connection.
func (c *Conn) Write(ctx context.Context, op OpCode, p []byte) error {
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetWriteDeadline(aLongTimeAgo) })
	err := c.WriteMessage(op, p)
	if !stop() && ctx.Err() != nil && err != nil {
		err = errors.Join(ctx.Err(), err)
	}
	return err
}
