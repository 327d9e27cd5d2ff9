package wsmw

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// batchSize bounds the bytes forwardFrame gathers on a connection before it
// writes them: frames that arrive back to back leave in one write.
const batchSize = 256 << 10

// batch is the pooled buffer forwardFrame gathers frames in, with its state
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

	fc frameCopy // the frame being forwarded (forwardFrame)
}

var batchPool = sync.Pool{New: func() any { return new(batch) }}

// forward sends src's current data frame, none of whose payload was read yet,
// to c as a frame with h's FIN, RSV bits and opcode, the cheapest way that
// applies: socket to socket in the kernel when splice allows it and the frame
// qualifies (see spliceFrame), otherwise through c's batch (forwardFrame).
// progress, if set, is called after each read from src inside the frame.
//
// An error wrapping ErrIncompleteFrame is src's failure, which src's next read
// reports too (a text frame that is not UTF-8 fails src with 1007); c stays
// usable if nothing of the frame was written. Any other error is c's.
func (c *Conn) forward(h Header, src *Conn, splice bool, progress func()) error {
	if splice {
		if done, err := c.spliceFrame(h, src, progress); done {
			return err
		}
	}
	return c.forwardFrame(h, src, progress)
}

// forwardFrame forwards src's current frame through c's batch, converting the
// masking in one pass: a masked payload is re-masked with a fresh key of c's
// if c is a client, unmasked if c is a server, and an unmasked one is masked
// or copied as it is. An uncompressed text payload is unmasked, checked as
// UTF-8 and masked again in the same chunk.
//
// The frame is not written at once. The batch is written when it is full, by
// the next write on c of any other kind, by flush, and before a read from src
// would wait (with only the frames that are complete: one whose source stalls
// stays until it is complete or fills the batch). A burst of frames thus
// leaves in one write; reads fetch each payload together with the next
// frame's header, so it also costs one read per frame. The caller must flush
// before it waits for anything else (frameReady tells whether src's next
// frame can be read without waiting).
//
// forwardFrame runs at the bottom of a proxy's relay goroutine, whose stack
// starts at 2 KiB and, once grown, stays grown for the session: its state
// lives in the batch and its error paths in functions of their own, so that
// its frame, and the deepest call under it (a system call), stay small.
func (c *Conn) forwardFrame(h Header, src *Conn, progress func()) error {
	fc, err := c.startFrame(h, src, progress)
	if err != nil {
		return err
	}
	for fc.r.remaining > 0 {
		if err = fc.step(); err != nil {
			err = fc.failed(err)
			break
		}
	}
	c.wmu.Unlock()
	src.unlockRead()
	return err
}

// frameCopy is one frame on its way from a reader into a batch: how its
// masking changes, and whom to tell of progress.
type frameCopy struct {
	c        *Conn   // the destination, whose frame lock is held
	r        *reader // the source, whose read lock is held
	b        *batch
	text     bool    // uncompressed text: unmasked, checked as UTF-8, masked again
	remask   bool    // masked in and out: converted in one pass
	mask     bool    // masked out, with key to
	to       [4]byte // c's fresh key
	toPos    int
	progress func()
}

// startFrame takes src's read lock and c's frame lock, checks that src's
// current frame can be forwarded to c, takes c's batch (from the pool if c
// has none) and appends the frame's header to it. On success both locks are
// held and the returned frameCopy, which lives in the batch, describes the
// frame's way.
//
//go:noinline
func (c *Conn) startFrame(h Header, src *Conn, progress func()) (*frameCopy, error) {
	r := &src.rd
	if err := src.lockRead(); err != nil {
		return nil, incompleteFrame(err)
	}
	if err := c.checkForward(&h, r); err != nil {
		src.unlockRead()
		return nil, err
	}
	if err := c.lockWriteBatch(h.OpCode); err != nil {
		src.unlockRead()
		return nil, err
	}
	if c.client {
		h.Mask = newMaskKey()
	}
	if c.batch == nil {
		c.batch = batchPool.Get().(*batch)
		c.batch.c = c
	}
	b := c.batch
	if batchSize-b.n < MaxHeaderSize {
		if err := c.writeBatch(); err != nil {
			c.wmu.Unlock()
			src.unlockRead()
			return nil, err
		}
	}
	b.start, b.sent = b.n, false
	b.n += len(AppendHeader(b.buf[b.n:b.n], h))
	text := r.msgOp == OpText && !r.msgCompressed
	b.fc = frameCopy{
		c: c, r: r, b: b, text: text,
		remask: r.hdr.Masked && c.client && !text, mask: c.client, to: h.Mask,
		progress: progress,
	}
	return &b.fc, nil
}

// checkForward checks that r's current frame is a data frame whose payload is
// unread, and completes h, the header it is forwarded with, for c.
func (c *Conn) checkForward(h *Header, r *reader) error {
	switch {
	case r.err != nil:
		return incompleteFrame(r.err)
	case r.hdr.OpCode.IsControl() || r.remaining != r.hdr.Length:
		return fmt.Errorf("%w: only a data frame whose payload is unread can be forwarded", ErrBadWrite)
	}
	h.Length, h.Masked = r.hdr.Length, c.client
	return c.checkWrite(h)
}

// incompleteFrame is the error of a frame that cannot be forwarded because
// its source failed with err.
func incompleteFrame(err error) error {
	return fmt.Errorf("%w: %w", ErrIncompleteFrame, err)
}

// step moves the next piece of the payload into the batch: what the source
// has buffered, or a read from its connection.
func (fc *frameCopy) step() error {
	b, r := fc.b, fc.r
	if b.n == batchSize {
		if err := fc.c.writeBatch(); err != nil {
			return err
		}
	}
	room := int64(batchSize - b.n)
	var n int
	var err error
	if r.buffered() > 0 {
		n = copy(b.buf[b.n:int64(b.n)+min(room, r.remaining)], r.bp[r.r:r.w])
		r.r += n
	} else {
		n, err = fc.read(room)
	}
	p := b.buf[b.n : b.n+n]
	b.n += n
	if cerr := fc.convert(p); cerr != nil {
		return cerr
	}
	if n > 0 && fc.progress != nil {
		fc.progress()
	}
	return err
}

// read reads from the source's connection straight into the batch: the rest
// of the payload and, if room allows, the next frame's header with it; what
// lies past this frame goes back to the source's buffer.
func (fc *frameCopy) read(room int64) (int, error) {
	r, b := fc.r, fc.b
	r.release()
	n, err := r.forwardRead(fc.c, int(min(room, r.remaining+MaxHeaderSize)))
	if int64(n) > r.remaining {
		r.acquire()
		r.w = copy(r.bp[:], b.buf[int64(b.n)+r.remaining:b.n+n])
		n = int(r.remaining)
	}
	return n, err
}

// convert turns the masking of p, bytes of the payload just gathered, from
// the source's into c's, checking text as UTF-8 on the way.
func (fc *frameCopy) convert(p []byte) error {
	r := fc.r
	if fc.remask {
		r.maskPos, fc.toPos = remask(r.hdr.Mask, r.maskPos, fc.to, fc.toPos, p)
		r.remaining -= int64(len(p))
		return nil
	}
	err := r.take(p)
	if fc.mask {
		fc.toPos = Mask(fc.to, fc.toPos, p)
	}
	return err
}

// failed ends a frame that could not be forwarded whole. A text payload that
// is not UTF-8 fails the source with 1007; a failed write is c's error; any
// other error is the source's. The frame is dropped whole when nothing of it
// was written; otherwise c is broken, since its frame cannot be completed.
func (fc *frameCopy) failed(err error) error {
	c, r, b := fc.c, fc.r, fc.b
	switch {
	case errors.Is(err, ErrInvalidUTF8):
		return c.abandonFrame(r, err)
	case c.writeErr != nil:
		return c.writeErr
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	rerr := r.ioErr(err)
	if !b.sent {
		b.n = b.start
		return fmt.Errorf("%w: source failed before the frame was sent: %w", ErrIncompleteFrame, rerr)
	}
	return c.wrote(fmt.Errorf("%w: source failed with %d bytes left: %w", ErrIncompleteFrame, r.remaining, rerr))
}

// abandonFrame ends forwardFrame's frame when its payload is not valid UTF-8
// (cause): the frame is dropped whole if nothing of it was written, and c is
// broken otherwise; then src (r) fails with 1007. The frames gathered before
// it are written first.
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

// writeComplete writes the frames the batch holds before the one forwardFrame
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

// flush writes the frames forwardFrame gathered on c and not yet written.
func (c *Conn) flush() error {
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

// frameReady reports whether the next frame can be read without waiting for
// the network: its header (and a control frame's payload) is buffered, or the
// connection already failed.
func (c *Conn) frameReady() bool {
	r := &c.rd
	if c.lockRead() != nil {
		return true
	}
	defer c.unlockRead()
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

// idle reports whether nothing is buffered below c's reader, so that its next
// read waits for the network: on a socket, when the reader holds no bytes; on
// TLS over TCP, when the TLS layer holds none either, which it reads without
// waiting to know (and the next read then waits on the socket, see tlsIdle).
// Any other connection reports false.
func (c *Conn) idle() bool {
	if c.lockRead() != nil {
		return false
	}
	defer c.unlockRead()
	r := &c.rd
	switch {
	case r.err != nil || r.buffered() > 0 || r.remaining > 0:
		return false
	case r.rawFn != nil:
		return true
	case r.tls != nil:
		return !r.probe(r.tls)
	}
	return false
}
