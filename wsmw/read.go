package wsmw

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// readBufSize is the size of the pooled read buffer. A connection holds one only
// while bytes are in flight; it goes back to the pool before a blocking header read.
const readBufSize = 4096

// readBufPool holds the read buffers of connections not reading at the moment.
// It has no New function: a reader that finds it empty allocates a buffer
// where its stack is shallow (see rawFill), not in the middle of a read.
var readBufPool sync.Pool

// getReadBuf returns a pooled read buffer, or a new one.
func getReadBuf() *[readBufSize]byte {
	if bp, ok := readBufPool.Get().(*[readBufSize]byte); ok {
		return bp
	}
	return new([readBufSize]byte)
}

// reader is the receiving half of a Conn: frame parsing, the rules of RFC 6455
// §5 applied to every received frame, and the state of the message in progress.
type reader struct {
	c  *Conn
	mu sync.Mutex // held during each read call; Close uses TryLock to learn whether it may read

	bp   *[readBufSize]byte // pooled buffer, nil while idle
	r, w int                // unread bytes are bp[r:w]

	rawFn   func(fd uintptr) bool // readiness read for syscall.RawConn (see read_unix.go)
	rawErr  error
	pendErr error      // a read error a burst met, for the next read to return (burst_unix.go)
	bst     burstState // the burst in progress, if any
	fwd     *batch     // the batch a forwardFrame read goes into (rawForwardRead in read_unix.go)

	quiet bool                // no RawConn, but reads wait in head rather than in a pooled buffer (stream.go)
	tls   *tlsIdle            // a TLS connection's waiting on the socket below (tlsidle.go); nil otherwise
	head  [MaxHeaderSize]byte // what a quiet read waits in: at most the next frame's header

	hdr       Header // current frame
	remaining int64  // payload bytes of hdr not read yet
	maskPos   int
	ctrl      [maxControlPayload]byte
	ctrlN     int
	ctrlPos   int

	inMessage     bool // a fragmented data message is in progress
	msgOp         OpCode
	msgCompressed bool // the message's first frame had RSV1: payload is not validated as text here
	msgLen        int64
	utf8          utf8Validator

	err error // sticky: once set, every read returns it
}

func (r *reader) init(c *Conn, buffered []byte) {
	r.c = c
	c.rc = rawConnOf(c.nc)
	if c.rc != nil {
		r.rawFn = r.rawRead
	}
	r.quiet = quietReads(c.nc)
	r.tls = newTLSIdle(c.nc)
	if len(buffered) > 0 {
		if len(buffered) <= readBufSize {
			r.acquire()
			r.w = copy(r.bp[:], buffered)
		} else {
			// More than one buffer's worth arrived with the handshake: keep it as is.
			r.bp = new([readBufSize]byte)
			r.w = copy(r.bp[:], buffered)
			c.nc = &prefixConn{Conn: c.nc, prefix: buffered[r.w:]}
			c.rc, r.rawFn = nil, nil
		}
	}
}

func (r *reader) acquire() {
	r.bp = getReadBuf()
	r.r, r.w = 0, 0
}

// release returns the buffer to the pool when it holds no unread bytes.
func (r *reader) release() {
	if r.bp != nil && r.r == r.w {
		readBufPool.Put(r.bp)
		r.bp = nil
		r.r, r.w = 0, 0
	}
}

// drop gives the buffer back to the pool with whatever it holds.
func (r *reader) drop() {
	if r.bp != nil {
		readBufPool.Put(r.bp)
		r.bp, r.r, r.w = nil, 0, 0
	}
}

func (r *reader) buffered() int { return r.w - r.r }

// testHookWait, when set by a test, is called by a reader just before it may
// block for more bytes, with whether it holds a pooled buffer at that moment.
var testHookWait atomic.Pointer[func(holdsBuffer bool)]

// fill makes at least need (≤ readBufSize) bytes available in the buffer.
func (r *reader) fill(need int) error {
	for r.buffered() < need {
		r.release() // nothing buffered: do not hold a buffer while blocked
		if r.bp == nil {
			if r.rawFn != nil {
				if h := testHookWait.Load(); h != nil {
					(*h)(false)
				}
				if err := r.rawFill(); err != nil {
					return err
				}
				continue
			}
			if r.quiet {
				if r.tls != nil && r.tls.waitSocket {
					if err := r.tls.wait(); err != nil {
						return err
					}
				}
				if err := r.quietFill(); err != nil {
					return err
				}
				continue
			}
			r.acquire()
		} else if r.r > 0 {
			r.w = copy(r.bp[:], r.bp[r.r:r.w])
			r.r = 0
		}
		if h := testHookWait.Load(); h != nil {
			(*h)(true)
		}
		n, err := r.c.nc.Read(r.bp[r.w:])
		r.w += n
		if err != nil && r.buffered() < need {
			return err
		}
	}
	return nil
}

// NextFrame reads the next frame and returns its header, after applying every
// receive rule of RFC 6455 to it, and a reader of its payload: unmasked and,
// for uncompressed text, checked as UTF-8, with io.EOF at the end of the frame.
// The reader is valid until the next call; what is left unread is skipped then.
// Control frames are returned too, after they are handled: a ping is answered
// by the ping handler (by default with a pong), a close is recorded and left
// for the caller to answer with Close. A rule violation fails the connection
// with the matching close code and returns a *FailError.
func (c *Conn) NextFrame() (Header, io.Reader, error) {
	h, err := c.nextFrame()
	if err != nil {
		return h, nil, err
	}
	return h, payloadReader{c}, nil
}

// nextFrame is NextFrame without the payload reader.
func (c *Conn) nextFrame() (Header, error) {
	if err := c.lockRead(); err != nil {
		return Header{}, err
	}
	defer c.unlockRead()
	return c.rd.nextFrame()
}

// readPayload reads the current frame's payload (see NextFrame).
func (c *Conn) readPayload(p []byte) (int, error) {
	if err := c.lockRead(); err != nil {
		return 0, err
	}
	defer c.unlockRead()
	return c.rd.readPayload(p)
}

// lockRead takes the read lock, or returns the error of a failed connection
// without waiting for it: the lock is held while the failure's close handshake
// goes on in the background (see fail).
//
// Inside a burst (see burst.go) the burst holds the lock for the frames it
// hands to its step, which read them on the same goroutine: there lockRead
// and unlockRead leave the lock alone.
func (c *Conn) lockRead() error {
	if fe := c.failed.Load(); fe != nil {
		return fe
	}
	if !c.rd.bst.on {
		c.rd.mu.Lock()
	}
	return nil
}

// unlockRead releases what lockRead took.
func (c *Conn) unlockRead() {
	if !c.rd.bst.on {
		c.rd.mu.Unlock()
	}
}

// payloadReader is the payload reader NextFrame returns; being one pointer
// wide, it is stored in the interface without an allocation.
type payloadReader struct{ c *Conn }

func (p payloadReader) Read(b []byte) (int, error) { return p.c.readPayload(b) }

func (r *reader) nextFrame() (Header, error) {
	if r.err != nil {
		return Header{}, r.err
	}
	if r.remaining > 0 {
		if err := r.skipPayload(); err != nil {
			return Header{}, err
		}
	}
	r.hdr = Header{}
	r.ctrlN, r.ctrlPos = 0, 0

	if err := r.fill(2); err != nil {
		return Header{}, r.ioErr(err)
	}
	n := headerSize(r.bp[r.r], r.bp[r.r+1])
	if err := r.fill(n); err != nil {
		return Header{}, r.ioErr(err)
	}
	h, err := parseHeader(r.bp[r.r : r.r+n])
	r.r += n
	if err != nil {
		r.remaining = 0 // a malformed header's length cannot be trusted: the drain does not skip a payload
		return h, r.fail(StatusProtocolError, err)
	}
	if code, err := r.check(&h); err != nil {
		r.remaining = h.Length // the drain must skip this frame's payload to find the peer's close
		return h, r.fail(code, err)
	}
	r.hdr = h
	r.remaining = h.Length
	r.maskPos = 0

	if h.OpCode.IsControl() {
		return h, r.readControl()
	}
	if h.OpCode != OpContinuation {
		r.msgOp = h.OpCode
		r.msgCompressed = h.Rsv&RSV1 != 0
		r.msgLen = 0
		r.utf8.reset()
	}
	r.msgLen += h.Length
	r.inMessage = !h.Fin
	if h.Length == 0 {
		return h, r.endFrame()
	}
	return h, nil
}

// check applies the receive rules of RFC 6455 §5 to a parsed header.
func (r *reader) check(h *Header) (StatusCode, error) {
	c := r.c
	switch {
	case !h.OpCode.valid():
		return StatusProtocolError, &protoErr{"unknown opcode " + h.OpCode.String()}
	case h.Masked == c.client && c.client:
		return StatusProtocolError, &protoErr{"masked frame from server"}
	case h.Masked == c.client:
		return StatusProtocolError, &protoErr{"unmasked frame from client"}
	case h.Rsv&^c.rsvAllowed != 0:
		return StatusProtocolError, &protoErr{"reserved bits set without a negotiated extension"}
	}
	if h.OpCode.IsControl() {
		switch {
		case !h.Fin:
			return StatusProtocolError, &protoErr{"fragmented control frame"}
		case h.Length > maxControlPayload:
			return StatusProtocolError, &protoErr{"control frame payload over 125 bytes"}
		case h.Rsv != 0:
			return StatusProtocolError, &protoErr{"reserved bits set on a control frame"}
		}
		return 0, nil
	}
	msgLen := h.Length
	if h.OpCode == OpContinuation {
		switch {
		case !r.inMessage:
			return StatusProtocolError, &protoErr{"continuation frame without a message in progress"}
		case h.Rsv != 0:
			return StatusProtocolError, &protoErr{"reserved bits set on a continuation frame"}
		}
		msgLen += r.msgLen
	} else if r.inMessage {
		return StatusProtocolError, &protoErr{"new data frame inside a fragmented message"}
	}
	if h.Length > c.maxFrame {
		return StatusMessageTooBig, fmt.Errorf("%w: frame of %d bytes exceeds the limit of %d", ErrPayloadTooBig, h.Length, c.maxFrame)
	}
	if msgLen > c.maxMessage {
		return StatusMessageTooBig, fmt.Errorf("%w: message of %d bytes exceeds the limit of %d", ErrPayloadTooBig, msgLen, c.maxMessage)
	}
	return 0, nil
}

// readControl reads a control frame's payload into r.ctrl and acts on it.
func (r *reader) readControl() error {
	n := int(r.hdr.Length)
	for r.ctrlN < n {
		if r.buffered() == 0 {
			if err := r.fill(1); err != nil {
				return r.ioErr(err)
			}
		}
		k := copy(r.ctrl[r.ctrlN:n], r.bp[r.r:r.w])
		r.r += k
		r.ctrlN += k
	}
	r.remaining = 0
	p := r.ctrl[:n]
	if r.hdr.Masked {
		Mask(r.hdr.Mask, 0, p)
	}
	c := r.c
	switch r.hdr.OpCode {
	case OpPing:
		if c.pingHandler != nil {
			return c.pingHandler(p)
		}
		if err := c.writeControl(OpPong, p); err != nil && !errors.Is(err, ErrCloseSent) {
			return err
		}
	case OpPong:
		if c.pongHandler != nil {
			return c.pongHandler(p)
		}
	case OpClose:
		code, reason, err := ParseClosePayload(p)
		if err != nil {
			return r.fail(StatusProtocolError, &protoErr{"invalid close frame payload"})
		}
		ce := &CloseError{Code: code, Reason: reason}
		c.closeRecv.Store(ce)
		r.err = ce
		r.drop() // nothing after a close is read
		c.signalPeerDone()
	}
	return nil
}

func (r *reader) readPayload(p []byte) (int, error) {
	if r.hdr.OpCode.IsControl() {
		if r.ctrlPos >= r.ctrlN {
			return 0, io.EOF
		}
		n := copy(p, r.ctrl[r.ctrlPos:r.ctrlN])
		r.ctrlPos += n
		return n, nil
	}
	if r.remaining == 0 {
		return 0, io.EOF
	}
	if r.err != nil {
		return 0, r.err
	}
	if int64(len(p)) > r.remaining {
		p = p[:r.remaining]
	}
	var n int
	switch {
	case r.buffered() > 0:
		n = copy(p, r.bp[r.r:r.w])
		r.r += n
	case len(p) >= readBufSize:
		// Large read with nothing buffered: straight into the caller's buffer.
		r.release()
		var err error
		n, err = r.c.nc.Read(p)
		if n == 0 && err != nil {
			return 0, r.ioErr(err)
		}
	default:
		if err := r.fill(1); err != nil {
			return 0, r.ioErr(err)
		}
		n = copy(p, r.bp[r.r:r.w])
		r.r += n
	}
	if err := r.take(p[:n]); err != nil {
		return 0, r.fail(StatusInvalidPayload, err)
	}
	return n, nil
}

// take accounts for p, the next bytes of the current data frame's payload,
// read into place: it unmasks them and checks an uncompressed text message as
// UTF-8, returning the violation (wrapping ErrInvalidUTF8) for the caller to
// fail the connection with 1007. The bytes count as consumed either way, so a
// drain after the failure does not skip them again.
func (r *reader) take(p []byte) error {
	if r.hdr.Masked {
		r.maskPos = Mask(r.hdr.Mask, r.maskPos, p)
	}
	r.remaining -= int64(len(p))
	if r.msgOp == OpText && !r.msgCompressed && !r.utf8.write(p) {
		return fmt.Errorf("%w in text message", ErrInvalidUTF8)
	}
	return r.textEnd()
}

// textEnd checks, at the end of a data frame's payload, that the end of a text
// message is also the end of a UTF-8 sequence.
func (r *reader) textEnd() error {
	if r.remaining == 0 && r.hdr.Fin && r.msgOp == OpText && !r.msgCompressed && !r.utf8.complete() {
		return fmt.Errorf("%w: text message ends inside a character", ErrInvalidUTF8)
	}
	return nil
}

// endFrame fails the connection with 1007 when a data frame's payload is fully
// read and a text message ends inside a character.
func (r *reader) endFrame() error {
	if err := r.textEnd(); err != nil {
		return r.fail(StatusInvalidPayload, err)
	}
	return nil
}

// skipPayload reads and drops the rest of the current frame, still applying the UTF-8 rule.
func (r *reader) skipPayload() error {
	var scratch [512]byte
	for r.remaining > 0 {
		if _, err := r.readPayload(scratch[:]); err != nil && err != io.EOF {
			return err
		}
	}
	return nil
}

// forwardRead reads up to want bytes from the connection into dst's batch, at
// its end, for forwardFrame. Before it may wait, it writes the complete frames
// the batch holds, so none stays gathered while the source is quiet.
func (r *reader) forwardRead(dst *Conn, want int) (int, error) {
	if r.rawFn != nil {
		return r.rawForwardRead(dst, want)
	}
	// A connection that cannot be waited on for readiness (TLS, say): any read may wait.
	if err := dst.writeComplete(); err != nil {
		return 0, err
	}
	b := dst.batch
	return r.c.nc.Read(b.buf[b.n : b.n+want])
}

// ioErr turns a read error into the error the caller sees, and makes it sticky.
func (r *reader) ioErr(err error) error {
	if r.err != nil {
		return r.err
	}
	// EOF inside a frame, or between the fragments of a message, loses data: not a clean end.
	midFrame := r.buffered() > 0 || r.remaining > 0 || r.inMessage
	switch {
	case r.c.closed.Load():
		if ce := r.c.closeRecv.Load(); ce != nil {
			err = ce
		} else {
			err = fmt.Errorf("%w: %w", ErrClosed, err)
		}
	case midFrame && (err == io.EOF || err == io.ErrUnexpectedEOF):
		err = fmt.Errorf("%w: %w", ErrIncompleteFrame, io.ErrUnexpectedEOF)
	}
	r.err = err
	r.release()
	r.c.signalPeerDone()
	return err
}
