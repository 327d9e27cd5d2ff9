package wsmw

import (
	"fmt"
	"io"
)

// RemaskFrame forwards the rest of src's current frame to c, a client-role
// connection, as a frame with header h. The payload arrives masked with the
// peer's key and leaves masked with a fresh key of c's: Remask converts it in
// one pass instead of unmasking and masking again. It applies only when src's
// frame is masked and its payload needs no UTF-8 check (binary, or a compressed
// message); otherwise it reports false, having done nothing, and the caller
// uses WriteFrameFrom. progress, if set, is called after each read from src.
// Like WriteFrameFrom, a failure before anything was written leaves c usable;
// a failure later breaks it, and a failure of src is also returned by src's
// next read.
func (c *Conn) RemaskFrame(h Header, src *Conn, progress func()) (bool, error) {
	r := &src.rd
	if !c.client || !r.hdr.Masked || r.hdr.OpCode.IsControl() ||
		(r.msgOp == OpText && !r.msgCompressed) || h.Length != r.hdr.Length {
		return false, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return true, r.err
	}
	if r.remaining != h.Length {
		return false, nil // part of the payload was read already
	}
	h.Masked = true
	if err := c.checkWrite(&h); err != nil {
		return true, err
	}
	if err := c.lockWrite(h.OpCode); err != nil {
		return true, err
	}
	defer c.wmu.Unlock()
	h.Mask = newMaskKey()

	bp := writeBufPool.Get().(*writeBuf)
	defer writeBufPool.Put(bp)
	buf := AppendHeader(bp[:0], h)
	fromPos, toPos := r.maskPos, 0
	sent := false
	for {
		// Fill the chunk from src: what it buffered first, then the socket.
		start := len(buf)
		room := min(int64(len(bp)-start), r.remaining)
		for int64(len(buf)-start) < room {
			var n int
			var err error
			if r.buffered() > 0 {
				n = copy(bp[len(buf):start+int(room)], r.bp[r.r:r.w])
				r.r += n
			} else {
				r.release()
				n, err = src.nc.Read(bp[len(buf) : start+int(room)])
			}
			buf = bp[:len(buf)+n]
			if n > 0 && progress != nil {
				progress()
			}
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				rerr := r.ioErr(err)
				if !sent {
					return true, fmt.Errorf("%w: source failed before the frame was sent: %w", ErrIncompleteFrame, rerr)
				}
				return true, c.wrote(fmt.Errorf("%w: source failed with %d bytes left: %w", ErrIncompleteFrame, r.remaining, rerr))
			}
		}
		chunk := bp[start:len(buf)]
		fromPos, toPos = Remask(r.hdr.Mask, fromPos, h.Mask, toPos, chunk)
		r.remaining -= int64(len(chunk))
		r.maskPos = fromPos
		if len(buf) > 0 {
			if _, err := c.nc.Write(buf); err != nil {
				return true, c.wrote(err)
			}
			sent = true
		}
		if r.remaining == 0 {
			return true, r.endFrame()
		}
		buf = bp[:0]
	}
}
