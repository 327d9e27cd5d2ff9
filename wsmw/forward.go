package wsmw

import (
	"fmt"
	"io"
	"sync"
)

// batchSize bounds the bytes ForwardFrame gathers on a connection before it
// writes them: frames that arrive back to back leave in one write.
const batchSize = 256 << 10

type batchBuf [batchSize]byte

var batchPool = sync.Pool{New: func() any { return new(batchBuf) }}

// ForwardFrame forwards the rest of src's current frame to c as a frame with
// header h, converting the masking in one pass: a masked payload is re-masked
// with a fresh key of c's if c is a client, unmasked if c is a server, and an
// unmasked one is masked or copied as it is.
//
// It does not write each frame at once. The frame joins a batch held by c,
// written when it is full, when a read from src would block, by the next write
// on c of any other kind, and by Flush; a proxy forwarding a burst of frames
// thus makes one write for several of them. The caller must call Flush before
// it waits for anything else (FrameReady tells whether src's next frame can be
// read without waiting). Reads from src fetch the payload together with the
// next frame's header, so a burst also costs one read per frame.
//
// It applies only when the payload needs no UTF-8 check (binary, or a
// compressed message), nothing of it was read yet, and src reads from a
// socket directly (plain TCP or Unix); otherwise it reports false, having done
// nothing, and the caller uses WriteFrameFrom. progress, if set, is called
// after each read from src. A failure of src before any byte of the frame left
// leaves c usable (the frame is dropped whole); a failure later breaks c. A
// failure of src is also returned by src's next read.
func (c *Conn) ForwardFrame(h Header, src *Conn, progress func()) (bool, error) {
	r := &src.rd
	if r.hdr.OpCode.IsControl() || (r.msgOp == OpText && !r.msgCompressed) ||
		h.Length != r.hdr.Length || src.rc == nil {
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
	h.Masked = c.client
	if err := c.checkWrite(&h); err != nil {
		return true, err
	}
	if err := c.lockWriteBatch(h.OpCode); err != nil {
		return true, err
	}
	defer c.wmu.Unlock()
	if c.client {
		h.Mask = newMaskKey()
	}
	var from, to [4]byte
	if r.hdr.Masked {
		from = r.hdr.Mask
	}
	if c.client {
		to = h.Mask
	}
	if c.batch == nil {
		c.batch, c.batchN, c.batchW = batchPool.Get().(*batchBuf), 0, 0
	}
	if batchSize-c.batchN < MaxHeaderSize {
		if err := c.writeBatch(); err != nil {
			return true, err
		}
	}
	start := c.batchN
	c.frameStart, c.sent = start, false
	c.batchN += len(AppendHeader(c.batch[c.batchN:c.batchN], h))
	fromPos, toPos := r.maskPos, 0
	for r.remaining > 0 {
		if c.batchN == batchSize {
			if err := c.writeBatch(); err != nil {
				return true, err
			}
			c.frameStart = 0
		}
		room := int64(batchSize - c.batchN)
		var n int
		var err error
		if r.buffered() > 0 {
			n = copy(c.batch[c.batchN:int64(c.batchN)+min(room, r.remaining)], r.bp[r.r:r.w])
			r.r += n
		} else {
			r.release()
			// Read the rest of the payload and, if room allows, the next frame's
			// header with it; what lies past this frame goes back to src's buffer.
			n, err = r.forwardRead(c, int(min(room, r.remaining+MaxHeaderSize)))
			if int64(n) > r.remaining {
				r.acquire()
				r.w = copy(r.bp[:], c.batch[int64(c.batchN)+r.remaining:c.batchN+n])
				n = int(r.remaining)
			}
		}
		p := c.batch[c.batchN : c.batchN+n]
		switch {
		case r.hdr.Masked && c.client:
			fromPos, toPos = Remask(from, fromPos, to, toPos, p)
		case r.hdr.Masked:
			fromPos = Mask(from, fromPos, p)
		case c.client:
			toPos = Mask(to, toPos, p)
		}
		c.batchN += n
		r.remaining -= int64(n)
		r.maskPos = fromPos
		if n > 0 && progress != nil {
			progress()
		}
		if err != nil {
			if c.writeErr != nil {
				return true, c.writeErr // the flush before waiting failed
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			rerr := r.ioErr(err)
			if !c.sent {
				c.batchN = start // nothing of the frame left: it is dropped whole
				return true, fmt.Errorf("%w: source failed before the frame was sent: %w", ErrIncompleteFrame, rerr)
			}
			return true, c.wrote(fmt.Errorf("%w: source failed with %d bytes left: %w", ErrIncompleteFrame, r.remaining, rerr))
		}
	}
	return true, r.endFrame()
}

// writeBatch writes what the batch holds and empties it, keeping the buffer.
// The caller holds wmu.
func (c *Conn) writeBatch() error {
	w, n := c.batchW, c.batchN
	c.batchW, c.batchN = 0, 0
	if n == w {
		return nil
	}
	c.sent = true
	_, err := c.nc.Write(c.batch[w:n])
	return c.wrote(err)
}

// writeComplete writes the frames the batch holds before the one ForwardFrame
// is forwarding, which stays until it is complete or fills the batch. It is
// called before waiting for the source. The caller holds wmu.
func (c *Conn) writeComplete() error {
	w, n := c.batchW, c.frameStart
	if n <= w {
		return nil
	}
	c.batchW = n
	_, err := c.nc.Write(c.batch[w:n])
	return c.wrote(err)
}

// flushLocked writes the batch and returns its buffer to the pool. The caller holds wmu.
func (c *Conn) flushLocked() error {
	if c.batch == nil {
		return nil
	}
	err := c.writeBatch()
	batchPool.Put(c.batch)
	c.batch = nil
	return err
}

// Flush writes the frames ForwardFrame gathered on c and not yet written.
func (c *Conn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.batch == nil {
		return nil
	}
	if c.writeErr != nil {
		batchPool.Put(c.batch)
		c.batch, c.batchN, c.batchW = nil, 0, 0
		return c.writeErr
	}
	return c.flushLocked()
}

// FrameReady reports whether NextFrame can return without waiting for the
// network: the next frame's header (and a control frame's payload) is buffered,
// or the connection already failed.
func (c *Conn) FrameReady() bool {
	r := &c.rd
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return true
	}
	if r.remaining > 0 || r.buffered() < 2 {
		return false
	}
	b := r.bp[r.r:r.w]
	n := headerSize(b[0], b[1])
	if len(b) < n {
		return false
	}
	if OpCode(b[0] & 0x0f).IsControl() {
		n += int(b[1] & 0x7f)
	}
	return len(b) >= n
}
