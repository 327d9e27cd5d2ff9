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

// appendMessage reads the next whole message, appending its payload to dst, and
// returns its type. Control frames in between are handled (see nextDataFrame);
// the message size limit bounds what is appended.
func (c *Conn) appendMessage(dst []byte) (OpCode, []byte, error) {
	if err := c.lockRead(); err != nil {
		return 0, dst, err
	}
	defer c.unlockRead()
	r := &c.rd
	if r.inMessage || r.remaining > 0 {
		// A message read frame by frame was left unfinished: drop it.
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

// aLongTimeAgo is a deadline in the past, used to interrupt a blocked read or write.
var aLongTimeAgo = time.Unix(1, 0)

// MessageType is the type of a data message, text or binary. Control frames
// are not messages: pings go out with Ping and closes with Close.
type MessageType uint8

// Message types, with the values of their opcodes.
const (
	MessageText   = MessageType(OpText)
	MessageBinary = MessageType(OpBinary)
)

func (t MessageType) String() string { return OpCode(t).String() }

// Read reads the next whole message, appending its payload to buf, and returns
// its type and the extended slice; a reused buf[:0] makes steady-state reads
// allocation-free, nil allocates. Control frames in between are handled: pings
// answered, pongs passed to the pong handler, and a close answered with the
// same code, the connection then closed and the peer's *CloseError returned.
// A compressed message is inflated. MaxMessageSize bounds what is appended.
// When ctx ends, the read is interrupted and the connection broken.
func (c *Conn) Read(ctx context.Context, buf []byte) (MessageType, []byte, error) {
	var op OpCode
	err := c.withDeadline(ctx, c.SetReadDeadline, func() (err error) {
		op, buf, err = c.appendMessage(buf)
		return err
	})
	return MessageType(op), buf, err
}

// Write sends p as one message of type typ, as a single frame, compressed when
// permessage-deflate is in effect and p is at least the compression
// threshold. Frames from concurrent writers never interleave. When ctx ends,
// the write is interrupted and the connection broken.
func (c *Conn) Write(ctx context.Context, typ MessageType, p []byte) error {
	return c.withDeadline(ctx, c.nc.SetWriteDeadline, func() error {
		return c.writeMessage(OpCode(typ), p)
	})
}

// withDeadline runs op, setting a deadline in the past with set if ctx ends
// before op returns. A context that cannot end costs nothing.
func (c *Conn) withDeadline(ctx context.Context, set func(time.Time) error, op func() error) error {
	if ctx.Done() == nil {
		return op()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = set(aLongTimeAgo) })
	err := op()
	if !stop() && ctx.Err() != nil && err != nil {
		err = errors.Join(ctx.Err(), err)
	}
	return err
}
