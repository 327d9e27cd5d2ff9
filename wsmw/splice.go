package wsmw

import (
	"fmt"
	"io"
	"net"
	"sync"
)

// spliceMin is the smallest payload worth moving with splice: below it, the
// copy through a pooled buffer is cheaper than the extra system calls.
const spliceMin = 32 << 10

// spliceStep bounds one splice call, so progress is reported during long frames
// (the proxy re-arms the destination's write deadline on it).
const spliceStep = 256 << 10

var limitedPool = sync.Pool{New: func() any { return new(io.LimitedReader) }}

// SpliceFrame forwards the rest of src's current frame to c as a frame with
// header h, moving the payload from socket to socket inside the kernel (splice
// on Linux) instead of through user space. It applies only when nothing needs
// to be done to the bytes: c does not mask (server role), src's frame is not
// masked, the payload needs no UTF-8 check (binary, or a compressed message),
// both connections are plain TCP, and the payload is at least 32 KiB. It
// reports false, having done nothing, when it does not apply; the caller then
// uses WriteFrameFrom. progress, if set, is called after each step of at most
// 256 KiB. Like WriteFrameFrom it holds c's frame lock throughout; src must not
// be read concurrently. If src ends inside the frame, the error wraps
// ErrIncompleteFrame (and src's next read returns it); any other error is c's.
// Either way c is broken, since its frame cannot be completed.
func (c *Conn) SpliceFrame(h Header, src *Conn, progress func()) (bool, error) {
	r := &src.rd
	if c.client || r.hdr.Masked || r.hdr.OpCode.IsControl() || r.remaining < spliceMin ||
		(r.msgOp == OpText && !r.msgCompressed) || h.Length != r.hdr.Length {
		return false, nil
	}
	dst, ok1 := c.nc.(*net.TCPConn)
	from, ok2 := src.nc.(*net.TCPConn)
	if !ok1 || !ok2 {
		return false, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return true, r.err
	}
	h.Masked = false
	if err := c.checkWrite(&h); err != nil {
		return true, err
	}
	if err := c.lockWrite(h.OpCode); err != nil {
		return true, err
	}
	defer c.wmu.Unlock()

	// The header and the bytes the reader already buffered go out in one write.
	head := int64(r.buffered())
	if head > r.remaining {
		head = r.remaining
	}
	c.wbufs[0], c.wbufs[1] = AppendHeader(c.whdr[:0], h), nil
	if head > 0 {
		c.wbufs[1] = r.bp[r.r : r.r+int(head)]
	}
	c.wv = c.wbufs[:]
	_, err := c.wv.WriteTo(c.nc)
	c.wbufs[0], c.wbufs[1] = nil, nil
	if err != nil {
		return true, c.wrote(err)
	}
	r.r += int(head)
	r.remaining -= head
	r.release()

	lr := limitedPool.Get().(*io.LimitedReader) // pooled: it escapes through ReadFrom
	defer limitedPool.Put(lr)
	for r.remaining > 0 {
		lr.R, lr.N = from, min(r.remaining, spliceStep)
		want := lr.N
		n, err := dst.ReadFrom(lr)
		lr.R = nil
		r.remaining -= n
		if progress != nil && n > 0 {
			progress()
		}
		switch {
		case err == nil && n < want:
			// src ended inside the frame: that is src's error, reported by its next read;
			// the frame on c can never be completed.
			r.err = fmt.Errorf("%w: %w", ErrIncompleteFrame, io.ErrUnexpectedEOF)
			src.signalPeerDone()
			c.wrote(fmt.Errorf("%w: source ended with %d bytes left", ErrIncompleteFrame, r.remaining))
			return true, r.err
		case err != nil:
			// A failed splice is taken as c's failure (src's own failure shows on its next read).
			return true, c.wrote(err)
		}
	}
	return true, r.endFrame()
}
