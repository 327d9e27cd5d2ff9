package wsmw

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/klauspost/compress/flate"
)

// deflateTail goes after every compressed message on input (RFC 7692 §7.2.2):
// the 0x00 0x00 0xff 0xff the sender stripped, then an empty final stored block
// so that the decompressor reports io.EOF at the end of the message.
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// deflateState is a Conn's permessage-deflate: the negotiated parameters, the
// receive window kept between messages when the peer uses context takeover, and
// the compressor kept when this side does. Nil when the extension is off.
type deflateState struct {
	params DeflateParams
	codec  bool // the message level inflates and compresses (the extension came from CompressionOptions)

	// Receive side, used by the reading goroutine.
	recvTakeover bool
	recvSize     int    // 2^(peer's window bits)
	win          window // the end of what was inflated; allocated with the first compressed message

	// Send side, used under msgMu.
	sendTakeover bool
	sendBits     int
	level        int
	threshold    int
	fw           *flate.Writer // kept between messages with context takeover; nil until the first
	out          appendWriter
}

// newDeflateState returns the state for params p in the given role; o is nil for
// a Conn that only inspects (the message level leaves payloads as they are).
func newDeflateState(p DeflateParams, client bool, o *CompressionOptions) *deflateState {
	sendNoCT, recvNoCT := p.ServerNoContextTakeover, p.ClientNoContextTakeover
	sendBits, recvBits := p.ServerMaxWindowBits, p.ClientMaxWindowBits
	if client {
		sendNoCT, recvNoCT = recvNoCT, sendNoCT
		sendBits, recvBits = recvBits, sendBits
	}
	s := &deflateState{
		params:       p,
		codec:        o != nil,
		recvTakeover: !recvNoCT,
		recvSize:     1 << bitsOr(recvBits, 15),
		sendTakeover: !sendNoCT,
		sendBits:     bitsOr(sendBits, 15),
	}
	if o != nil {
		s.level, s.threshold = o.level(), o.threshold()
	}
	return s
}

// inflates reports whether the message level inflates compressed messages (nil-safe).
func (s *deflateState) inflates() bool { return s != nil && s.codec }

// compresses reports whether Write compresses a message of n bytes (nil-safe).
func (s *deflateState) compresses(n int) bool { return s != nil && s.codec && n >= s.threshold }

// window is the end of the inflated stream: a ring of the last len(buf) bytes.
type window struct {
	buf  []byte
	pos  int
	full bool
}

func (w *window) write(p []byte) {
	if len(p) >= len(w.buf) {
		copy(w.buf, p[len(p)-len(w.buf):])
		w.pos, w.full = 0, true
		return
	}
	n := copy(w.buf[w.pos:], p)
	w.pos += n
	if n < len(p) {
		w.pos = copy(w.buf, p[n:])
		w.full = true
	} else if w.pos == len(w.buf) {
		w.pos, w.full = 0, true
	}
}

// appendTo appends the window's bytes, oldest first.
func (w *window) appendTo(dst []byte) []byte {
	if !w.full {
		return append(dst, w.buf[:w.pos]...)
	}
	return append(append(dst, w.buf[w.pos:]...), w.buf[:w.pos]...)
}

// inflater is a pooled decompressor with what feeds it one message.
type inflater struct {
	fr    io.Reader
	reset flate.Resetter
	src   inflateSource
	dict  []byte // the receive window, made contiguous for Reset
	probe [512]byte
	win   *window // receives the output with context takeover, else nil
	limit int64   // output bound
	n     int64   // output so far
	text  bool    // validate the output as UTF-8
	utf8  utf8Validator
	done  bool
}

var inflaterPool = sync.Pool{New: func() any {
	f := &inflater{}
	rc := flate.NewReader(&f.src)
	f.fr, f.reset = rc, rc.(flate.Resetter)
	return f
}}

// inflateSource feeds the decompressor one message: its payload, from the
// frames of the message being read or from a slice, then deflateTail.
type inflateSource struct {
	rd   *reader // frames still to read; nil once the message is read, or for a slice
	p    []byte  // bytes not handed out yet
	tail bool    // deflateTail was queued
	fed  bool    // the payload was not empty
	err  error   // the source's own error: the connection's, or io.EOF after the tail
	buf  [readBufSize]byte
}

func (s *inflateSource) refill() error {
	for len(s.p) == 0 {
		switch {
		case s.err != nil:
			return s.err
		case s.rd != nil:
			n, err := s.rd.readMessageBytes(s.buf[:])
			s.p = s.buf[:n]
			s.fed = s.fed || n > 0
			if err == io.EOF {
				s.rd = nil
			} else if err != nil {
				s.rd, s.err = nil, err
			}
		case !s.tail:
			s.p, s.tail = deflateTail, true
			if !s.fed {
				s.p = deflateTail[4:] // an empty payload (RFC 7692 sends 0x00) is taken as an empty message
			}
		default:
			s.err = io.EOF
		}
	}
	return nil
}

func (s *inflateSource) ReadByte() (byte, error) {
	if len(s.p) == 0 {
		if err := s.refill(); err != nil {
			return 0, err
		}
	}
	b := s.p[0]
	s.p = s.p[1:]
	return b, nil
}

func (s *inflateSource) Read(p []byte) (int, error) {
	if len(s.p) == 0 {
		if err := s.refill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, s.p)
	s.p = s.p[n:]
	return n, nil
}

// readMessageBytes reads the raw payload of the message in progress across its
// frames (control frames in between are handled); io.EOF at its end.
func (r *reader) readMessageBytes(p []byte) (int, error) {
	for {
		n, err := r.readPayload(p)
		if n > 0 || (err != nil && err != io.EOF) {
			return n, err
		}
		if r.hdr.Fin {
			return 0, io.EOF
		}
		if _, err := r.nextDataFrame(); err != nil {
			return 0, err
		}
	}
}

// begin takes a pooled decompressor for one message from rd (or payload),
// primed with the receive window, its output bounded by limit.
func (s *deflateState) begin(rd *reader, payload []byte, limit int64, text bool) *inflater {
	f := inflaterPool.Get().(*inflater)
	f.src.rd, f.src.p, f.src.tail, f.src.err, f.src.fed = rd, payload, false, nil, len(payload) > 0
	f.limit, f.n, f.text, f.done, f.win = limit, 0, text, false, nil
	f.utf8.reset()
	f.dict = f.dict[:0]
	if s.recvTakeover {
		if s.win.buf == nil {
			s.win.buf = make([]byte, s.recvSize)
		}
		f.win = &s.win
		f.dict = s.win.appendTo(f.dict)
	}
	_ = f.reset.Reset(&f.src, f.dict)
	return f
}

// end returns f to the pool.
func (s *deflateState) end(f *inflater) {
	f.src.rd, f.src.p, f.src.err, f.win = nil, nil, nil, nil
	inflaterPool.Put(f)
}

// read inflates the next bytes of the message into p; io.EOF at its end. Errors
// are the source's (the connection's) as they are, or wrap ErrPayloadTooBig
// once the output exceeds the limit (checked before more is inflated),
// ErrInvalidCompression and ErrInvalidUTF8; none of them fails the connection.
func (f *inflater) read(p []byte) (int, error) {
	if f.done {
		return 0, io.EOF
	}
	if room := f.limit - f.n + 1; int64(len(p)) > room {
		p = p[:room] // one byte past the limit is enough to know it is exceeded
	}
	n, err := f.fr.Read(p)
	f.n += int64(n)
	if f.n > f.limit {
		return 0, fmt.Errorf("%w: inflated message exceeds the limit of %d bytes", ErrPayloadTooBig, f.limit)
	}
	if f.text && !f.utf8.write(p[:n]) {
		return 0, fmt.Errorf("%w in compressed text message", ErrInvalidUTF8)
	}
	if f.win != nil {
		f.win.write(p[:n])
	}
	switch {
	case err == nil:
		return n, nil
	case err == io.EOF:
		// A final block may end the data before the message does: drop the rest.
		for f.src.rd != nil {
			if _, err := f.src.rd.readMessageBytes(f.src.buf[:]); err == io.EOF {
				f.src.rd = nil
			} else if err != nil {
				return 0, err
			}
		}
		if f.text && !f.utf8.complete() {
			return 0, fmt.Errorf("%w: compressed text message ends inside a character", ErrInvalidUTF8)
		}
		f.done = true
		return n, io.EOF
	case f.src.err != nil && f.src.err != io.EOF:
		return 0, f.src.err
	}
	return 0, fmt.Errorf("%w: %w", ErrInvalidCompression, err)
}

// appendTo inflates the whole message, appending it to dst. dst grows at most to
// about twice the limit however much the data would inflate to, and not at all
// when the message fits.
func (f *inflater) appendTo(dst []byte) ([]byte, error) {
	start := len(dst)
	for {
		if len(dst) == cap(dst) {
			// Full: probe for more before growing, so that a message that fits costs nothing.
			n, err := f.read(f.probe[:])
			if n == 0 {
				if err == io.EOF {
					return dst, nil
				}
				if err != nil {
					return dst, err
				}
				continue
			}
			grow := max(len(dst)-start, 4096)
			if room := int64(start) + f.limit + 1 - int64(len(dst)); int64(grow) > room {
				grow = int(max(room, int64(n)))
			}
			dst = append(slices.Grow(dst, grow), f.probe[:n]...)
			if err == io.EOF {
				return dst, nil
			}
			if err != nil {
				return dst, err
			}
			continue
		}
		n, err := f.read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

// failInflate fails the connection for an inflate error (1009 over the limit,
// 1007 for corrupt data or invalid UTF-8); connection errors are returned as they are.
func (r *reader) failInflate(err error) error {
	switch {
	case errors.Is(err, ErrPayloadTooBig):
		return r.fail(StatusMessageTooBig, err)
	case errors.Is(err, ErrInvalidCompression), errors.Is(err, ErrInvalidUTF8):
		return r.fail(StatusInvalidPayload, err)
	}
	return err
}

// appendMessage inflates the compressed message whose first frame was just read, appending it to dst.
func (s *deflateState) appendMessage(r *reader, op OpCode, dst []byte) ([]byte, error) {
	f := s.begin(r, nil, r.c.maxMessage, op == OpText)
	defer s.end(f)
	dst, err := f.appendTo(dst)
	if err != nil {
		return dst, r.failInflate(err)
	}
	return dst, nil
}

// inflate appends to dst the payload of a compressed message received on c (a
// data message whose first frame had RSV1 set): compressed is the payload of its
// frames, concatenated. The output is bounded by the message size limit
// (ErrPayloadTooBig); corrupt data is ErrInvalidCompression. Text is not checked
// as UTF-8 and the connection is not failed: the caller decides. When the peer
// uses context takeover, every compressed message received must go through
// inflate or the message level, in order. Call it from the reading goroutine.
func (c *Conn) inflate(dst, compressed []byte) ([]byte, error) {
	s := c.pmd
	if s == nil {
		return dst, fmt.Errorf("%w: permessage-deflate is not in effect", ErrInvalidCompression)
	}
	if err := c.lockRead(); err != nil {
		return dst, err
	}
	defer c.unlockRead()
	f := s.begin(nil, compressed, c.maxMessage, false)
	defer s.end(f)
	return f.appendTo(dst)
}

// appendWriter is the io.Writer a compressor fills: it appends to b.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// pooledWriter is a compressor used for one message at a time (no context takeover).
type pooledWriter struct {
	fw  *flate.Writer
	out appendWriter
}

// writerPools hold compressors by level (1-9, 15-bit window) and by window (8-14 bits).
var writerPools [16]sync.Pool

func newFlateWriter(w io.Writer, level, bits int) *flate.Writer {
	if bits < 15 {
		fw, _ := flate.NewWriterWindow(w, 1<<bits) // 256 B to 16 KiB: always valid
		return fw
	}
	fw, _ := flate.NewWriter(w, level) // 1-9: always valid
	return fw
}

func writerPool(level, bits int) *sync.Pool {
	if bits < 15 {
		return &writerPools[9+bits-8]
	}
	return &writerPools[level-1]
}

// outBufPool holds buffers for compressed messages; larger ones are not kept.
var outBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

const maxPooledOut = 64 << 10

// writeMessage compresses p and sends it as one frame with RSV1 (RFC 7692 §7.2.1);
// the caller holds msgMu. Without context takeover a message that does not
// shrink is sent as it is.
func (s *deflateState) writeMessage(c *Conn, op OpCode, p []byte) error {
	bp := outBufPool.Get().(*[]byte)
	out := (*bp)[:0]
	if s.sendTakeover {
		if s.fw == nil {
			s.fw = newFlateWriter(&s.out, s.level, s.sendBits)
		}
		s.out.b = out
		_, _ = s.fw.Write(p) // appendWriter never fails, so neither does the compressor
		_ = s.fw.Flush()
		out, s.out.b = s.out.b, nil
	} else {
		pool := writerPool(s.level, s.sendBits)
		w, _ := pool.Get().(*pooledWriter)
		if w == nil {
			w = &pooledWriter{}
			w.fw = newFlateWriter(&w.out, s.level, s.sendBits)
		}
		w.out.b = out
		w.fw.Reset(&w.out)
		_, _ = w.fw.Write(p)
		_ = w.fw.Flush()
		out, w.out.b = w.out.b, nil
		pool.Put(w)
	}
	out = out[:len(out)-4] // Flush ends with 0x00 0x00 0xff 0xff; the receiver adds it back
	var err error
	if !s.sendTakeover && len(out) >= len(p) {
		err = c.writeFrame(Header{Fin: true, OpCode: op}, p, false)
	} else {
		err = c.writeFrame(Header{Fin: true, Rsv: RSV1, OpCode: op}, out, true)
	}
	if cap(out) <= maxPooledOut {
		*bp = out[:0]
		outBufPool.Put(bp)
	}
	return err
}
