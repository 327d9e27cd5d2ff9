package wsmw

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// batchSize bounds the bytes ForwardFrame gathers on a connection before it
// writes them: frames that arrive back to back leave in one write.
const batchSize = 256 << 10

// batch is the pooled buffer ForwardFrame gathers frames in, with its state
// (kept here rather than in Conn, so an idle connection stays small).
type batch struct {
	buf   [batchSize]byte
	c     *Conn // the connection it is written to
	n     int   // bytes gathered
	w     int   // bytes of buf[:n] written already
	start int   // where the frame being forwarded begins
	sent  bool  // a write went out since the current frame began

	want, got int   // forwardRead's request and result
	err       error // forwardRead's error
}

var batchPool = sync.Pool{New: func() any { return new(batch) }}

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
// The payload of an uncompressed text message is checked as UTF-8 on the way,
// as ReadPayload does; a violation fails src with 1007 and the frame is not
// forwarded. It applies only when nothing of the payload was read yet and src
// reads from a socket directly (plain TCP or Unix); otherwise it reports
// false, having done nothing, and the caller uses WriteFrameFrom. progress, if set, is called
// after each read from src. A failure of src before any byte of the frame left
// leaves c usable (the frame is dropped whole); a failure later breaks c. A
// failure of src is also returned by src's next read.
func (c *Conn) ForwardFrame(h Header, src *Conn, progress func()) (bool, error) {
	r := &src.rd
	if r.hdr.OpCode.IsControl() || h.Length != r.hdr.Length || src.rc == nil {
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
		c.batch = batchPool.Get().(*batch)
		c.batch.c = c
	}
	b := c.batch
	if batchSize-b.n < MaxHeaderSize {
		if err := c.writeBatch(); err != nil {
			return true, err
		}
	}
	b.start, b.sent = b.n, false
	b.n += len(AppendHeader(b.buf[b.n:b.n], h))
	fromPos, toPos := r.maskPos, 0
	text := r.msgOp == OpText && !r.msgCompressed
	for r.remaining > 0 {
		if b.n == batchSize {
			if err := c.writeBatch(); err != nil {
				return true, err
			}
		}
		room := int64(batchSize - b.n)
		var n int
		var err error
		if r.buffered() > 0 {
			n = copy(b.buf[b.n:int64(b.n)+min(room, r.remaining)], r.bp[r.r:r.w])
			r.r += n
		} else {
			r.release()
			// Read the rest of the payload and, if room allows, the next frame's
			// header with it; what lies past this frame goes back to src's buffer.
			n, err = r.forwardRead(c, int(min(room, r.remaining+MaxHeaderSize)))
			if int64(n) > r.remaining {
				r.acquire()
				r.w = copy(r.bp[:], b.buf[int64(b.n)+r.remaining:b.n+n])
				n = int(r.remaining)
			}
		}
		p := b.buf[b.n : b.n+n]
		switch {
		case text:
			// Checked as UTF-8 in between: unmask, check, mask.
			if r.hdr.Masked {
				fromPos = Mask(from, fromPos, p)
			}
			if !r.utf8.write(p) {
				err = errInvalidText
			}
			if c.client {
				toPos = Mask(to, toPos, p)
			}
		case r.hdr.Masked && c.client:
			fromPos, toPos = Remask(from, fromPos, to, toPos, p)
		case r.hdr.Masked:
			fromPos = Mask(from, fromPos, p)
		case c.client:
			toPos = Mask(to, toPos, p)
		}
		b.n += n
		r.remaining -= int64(n)
		r.maskPos = fromPos
		if n > 0 && progress != nil {
			progress()
		}
		if err == nil && text && r.remaining == 0 && r.hdr.Fin && !r.utf8.complete() {
			return true, c.abandonFrame(r, fmt.Errorf("%w: text message ends inside a character", ErrInvalidUTF8))
		}
		if err == errInvalidText {
			return true, c.abandonFrame(r, fmt.Errorf("%w in text message", ErrInvalidUTF8))
		}
		if err != nil {
			if c.writeErr != nil {
				return true, c.writeErr // the write before waiting failed
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			rerr := r.ioErr(err)
			if !b.sent {
				b.n = b.start // nothing of the frame left: it is dropped whole
				return true, fmt.Errorf("%w: source failed before the frame was sent: %w", ErrIncompleteFrame, rerr)
			}
			return true, c.wrote(fmt.Errorf("%w: source failed with %d bytes left: %w", ErrIncompleteFrame, r.remaining, rerr))
		}
	}
	return true, nil
}

// errInvalidText marks, inside ForwardFrame, a chunk of a text message that is not UTF-8.
var errInvalidText = errors.New("invalid utf-8")

// abandonFrame ends ForwardFrame's frame when its payload is not valid UTF-8
// (cause): the frame is dropped whole if nothing of it was written, and c is
// broken otherwise; then src (r) fails with 1007. The frames gathered before
// it are written first, since failing src waits for its close.
func (c *Conn) abandonFrame(r *reader, cause error) error {
	b := c.batch
	var werr error
	if !b.sent {
		b.n = b.start
		werr = c.writeBatch()
	} else {
		werr = c.wrote(fmt.Errorf("%w: the source failed inside the frame: %w", ErrIncompleteFrame, cause))
	}
	ferr := r.fail(StatusInvalidPayload, cause)
	if werr != nil && b.sent {
		return werr
	}
	return fmt.Errorf("%w: the source failed before the frame was sent: %w", ErrIncompleteFrame, ferr)
}

// writeBatch writes what the batch holds and empties it, keeping the buffer.
// The caller holds wmu.
func (c *Conn) writeBatch() error {
	b := c.batch
	w, n := b.w, b.n
	b.w, b.n, b.start = 0, 0, 0
	if n == w {
		return nil
	}
	b.sent = true
	_, err := c.nc.Write(b.buf[w:n])
	return c.wrote(err)
}

// writeComplete writes the frames the batch holds before the one ForwardFrame
// is forwarding, which stays until it is complete or fills the batch. It is
// called before waiting for the source. The caller holds wmu.
func (c *Conn) writeComplete() error {
	b := c.batch
	w, n := b.w, b.start
	if n <= w {
		return nil
	}
	b.w = n
	_, err := c.nc.Write(b.buf[w:n])
	return c.wrote(err)
}

// flushLocked writes the batch and returns its buffer to the pool. The caller holds wmu.
func (c *Conn) flushLocked() error {
	if c.batch == nil {
		return nil
	}
	err := c.writeBatch()
	c.putBatch()
	return err
}

func (c *Conn) putBatch() {
	c.batch.c = nil
	batchPool.Put(c.batch)
	c.batch = nil
}

// Flush writes the frames ForwardFrame gathered on c and not yet written.
func (c *Conn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.batch == nil {
		return nil
	}
	if c.writeErr != nil {
		c.batch.n, c.batch.w, c.batch.start = 0, 0, 0
		c.putBatch() // nothing more can be written
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
