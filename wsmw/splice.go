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

// spliceFrame forwards src's current frame, none of whose payload was read
// yet, to c as a frame with h's FIN, RSV bits and opcode, moving the payload
// from socket to socket inside the kernel (splice on Linux) instead of through
// user space. It applies only when nothing needs to be done to the bytes: c
// does not mask (server role), src's frame is not masked, the payload needs
// no UTF-8 check (binary, or a compressed message), both connections are plain
// TCP, and the payload is at least 32 KiB; otherwise it reports false, having
// done nothing. progress, if set, is called after each step of at most 256 KiB.
// It holds c's frame lock throughout. Errors are as forward's; since the frame
// on c cannot be completed once it started, c is broken by any failure.
func (c *Conn) spliceFrame(h Header, src *Conn, progress func()) (bool, error) {
	r := &src.rd
	dst, ok1 := c.nc.(*net.TCPConn)
	from, ok2 := src.nc.(*net.TCPConn)
	if !ok1 || !ok2 || c.client || r.hdr.Masked || r.hdr.OpCode.IsControl() || r.remaining < spliceMin ||
		r.remaining != r.hdr.Length || (r.msgOp == OpText && !r.msgCompressed) {
		return false, nil
	}
	if err := src.lockRead(); err != nil {
		return true, fmt.Errorf("%w: %w", ErrIncompleteFrame, err)
	}
	defer src.unlockRead()
	if r.err != nil {
		return true, fmt.Errorf("%w: %w", ErrIncompleteFrame, r.err)
	}
	h.Length, h.Masked = r.hdr.Length, false
	if err := c.checkWrite(&h); err != nil {
		return true, err
	}
	if err := c.lockWrite(h.OpCode); err != nil {
		return true, err
	}
	defer c.wmu.Unlock()
	if err := c.writeHead(h, r); err != nil {
		return true, err
	}
	return true, c.spliceRest(dst, from, src, progress)
}

// writeHead writes the frame's header and the payload bytes the reader has
// buffered already, in one write. The caller holds wmu.
func (c *Conn) writeHead(h Header, r *reader) error {
	head := min(int64(r.buffered()), r.remaining)
	c.wbufs[0], c.wbufs[1] = AppendHeader(c.whdr[:0], h), nil
	if head > 0 {
		c.wbufs[1] = r.bp[r.r : r.r+int(head)]
	}
	c.wv = c.wbufs[:]
	_, err := c.wv.WriteTo(c.nc)
	c.wbufs[0], c.wbufs[1] = nil, nil
	if err != nil {
		return c.wrote(err)
	}
	r.r += int(head)
	r.remaining -= head
	r.release()
	return nil
}

// spliceRest moves the rest of the payload from src's socket to dst in steps
// of at most spliceStep bytes. The caller holds c's frame lock and src's read lock.
func (c *Conn) spliceRest(dst, from *net.TCPConn, src *Conn, progress func()) error {
	r := &src.rd
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
			return r.err
		case err != nil:
			// A failed splice is taken as c's failure (src's own failure shows on its next read).
			return c.wrote(err)
		}
	}
	return r.endFrame()
}
