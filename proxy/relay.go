package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"unicode/utf8"
	"unsafe"

	"github.com/wsgate/wsgate/internal/relay"
	"github.com/wsgate/wsgate/wsmw"
)

// relayer forwards one direction of a session: the frames src sends, to dst,
// until src's close arrives or src fails. Each frame kind has its method:
// control frames are forwarded as they come, data frames stream through
// (relay.Forward) unless an inspector drops their message or needs it whole,
// in which case it is reassembled (gather), inspected and written (finish).
type relayer struct {
	s        *session
	dir      Direction
	src, dst *leg
	msg      *Message // the inspectors' view of a message; nil without inspectors

	splice      bool // large frames may move in the kernel (not with keepalive: a splice step reports no progress)
	shadowStale bool // passthrough: src compresses with context takeover, so a message cannot be inflated on its own
	recodeAll   bool // terminate: dst compresses, so every message is reassembled and written with dst's compression

	mode   msgMode   // what happens to the frames of the current message
	closed bool      // a close went to src or dst: data is no longer forwarded
	asm    assembly  // the current message, when it is reassembled
	trim   stackTrim // when the relayer moves to a fresh goroutine

	waitMark uintptr // where BeforeWait's frame lies in the current burst (see BeforeWait)
	grown    bool    // the burst ended because the stack grew
}

// msgMode is what the relayer does with the frames of the current message.
type msgMode uint8

const (
	streamMsg msgMode = iota // frames are forwarded as they arrive
	dropMsg                  // an inspector dropped the message: its frames are read and discarded
	gatherMsg                // the message is reassembled, for an inspector or for recompression
)

func newRelayer(s *session, dir Direction, src, dst *leg) *relayer {
	mode := s.p.cfg.Compression
	r := &relayer{
		s: s, dir: dir, src: src, dst: dst,
		splice:      s.p.cfg.PingInterval == 0,
		shadowStale: mode == CompressionPassthrough && senderTakeover(dir, src.conn),
		recodeAll:   mode == CompressionTerminate && compressed(dst.conn),
	}
	if len(s.chain) > 0 {
		r.msg = &Message{Session: &s.info, Direction: dir}
	}
	return r
}

// loop runs the relayer in the calling goroutine until src's reading is over,
// then tells the session; or, if the relayer continues in a fresh goroutine
// (see stackTrim), until it has handed off.
func (r *relayer) loop() {
	if r.run() {
		return
	}
	r.s.directionEnded()
}

// run forwards frames until src's close arrives or src fails. Before it waits
// for src, it writes what relay.Forward gathered for dst; and if the
// goroutine's stack has grown since run began, it may hand the relayer over to
// a fresh goroutine (stackTrim) and report true. Frames that arrive whole on
// a socket are handled inside relay.Burst, which waits for the next ones
// without an extra read.
func (r *relayer) run() (handedOff bool) {
	var mark byte // its address changes when the stack is copied to a larger one
	base := uintptr(unsafe.Pointer(&mark))
	for {
		if !relay.FrameReady(r.src.conn) {
			r.flush()
			if uintptr(unsafe.Pointer(&mark)) != base && r.trim.handOff() && relay.Idle(r.src.conn) {
				go r.loop()
				return true
			}
			r.waitMark, r.grown = 0, false
			if relay.Burst(r.src.conn, r) {
				return false
			}
			if r.grown {
				continue // to hand off before waiting
			}
		}
		if !r.Step() {
			return false
		}
	}
}

// Step reads and handles src's next frame; it reports false when the reading
// of src is over. It is also relay.Burster's Step.
func (r *relayer) Step() bool {
	h, payload, err := r.src.conn.NextFrame()
	r.trim.woke()
	if err != nil {
		r.s.readFailed(r.src, r.dst, err)
		return false
	}
	r.src.frames.Add(1)
	r.src.payload = payload
	if r.src == &r.s.up && r.s.drainUntil.Load() != 0 {
		r.s.extendDrain() // a drained upstream still sending is alive
	}
	switch {
	case h.OpCode == wsmw.OpClose:
		r.s.closeReceived(r.src, r.dst)
		return false
	case h.OpCode.IsControl():
		r.control(h)
		return true
	default:
		return r.data(h)
	}
}

// BeforeWait is relay.Burster's: before the burst waits for src, it writes
// what was gathered for dst. It ends the burst when that write failed, and
// when the goroutine's stack has grown since the burst began (the address of
// a local variable of a frame at the same depth has moved), so that run can
// hand the relayer to a fresh goroutine before it waits. Its first call, as
// the burst begins, only marks that depth: run has just flushed.
func (r *relayer) BeforeWait() bool {
	var mark byte
	at := uintptr(unsafe.Pointer(&mark))
	if r.waitMark == 0 {
		r.waitMark = at
		return !r.closed
	}
	r.flush()
	r.grown = at != r.waitMark
	return !r.closed && !r.grown
}

// control forwards a ping or pong, except the answers to the proxy's own keepalive pings.
func (r *relayer) control(h wsmw.Header) {
	p := relay.ControlPayload(r.src.conn)
	if r.closed || h.OpCode == wsmw.OpPong && bytes.Equal(p, r.s.kaToken[:]) {
		return
	}
	r.s.armWrite(r.dst)
	if err := r.dst.conn.WriteFrame(wsmw.Header{Fin: true, OpCode: h.OpCode}, p); err != nil {
		r.writeFailed(err)
	}
}

// data handles a data frame; it reports false when the session's reading of src is over.
func (r *relayer) data(h wsmw.Header) bool {
	if h.OpCode != wsmw.OpContinuation {
		r.begin(h)
	}
	r.src.bytes.Add(h.Length)
	r.src.dataFrames.Add(1)
	if r.closed || r.mode != streamMsg {
		r.flush() // the payload is read here, which may wait for src
	}
	switch {
	case r.closed || r.mode == dropMsg:
		_, _ = io.Copy(io.Discard, liveReader{r.src}) // a read error comes again with the next frame
	case r.mode == gatherMsg:
		return r.gather(h)
	default:
		r.forward(h)
	}
	return true
}

// begin decides, at a message's first frame, what happens to its frames:
// streamed, dropped, or reassembled for inspection or recompression.
func (r *relayer) begin(h wsmw.Header) {
	r.src.msgs.Add(1)
	r.mode = streamMsg
	recode := r.recodeAll || r.s.p.cfg.Compression == CompressionTerminate && h.Rsv&wsmw.RSV1 != 0 && compressed(r.src.conn)
	switch {
	case r.closed || len(r.s.chain) == 0 && !recode:
	case recode || r.s.chain.NeedsPayload(r.dir, h.OpCode):
		r.mode = gatherMsg
		r.asm.start(h, recode)
	default:
		r.inspectStart(h)
	}
}

// inspectStart runs the inspectors on a streamed message's first frame.
func (r *relayer) inspectStart(h wsmw.Header) {
	m := r.msg
	m.OpCode, m.Payload, m.Length, m.Final = h.OpCode, nil, h.Length, h.Fin
	v := r.s.chain.Inspect(m)
	if v.Action == Drop && r.shadowStale && h.Rsv&wsmw.RSV1 != 0 {
		// dst's window would miss a message later ones may refer to.
		v = Verdict{Action: Close, Code: wsmw.StatusInternalError, Reason: "compressed message cannot be dropped"}
	}
	switch v.Action {
	case Drop:
		r.mode = dropMsg
	case Close:
		r.policyClose(v)
	}
}

// forward streams a data frame to dst the cheapest way that applies: the
// mask converted in one pass (text checked as UTF-8 on the way), frames that
// arrive back to back gathered into one write, large binary frames from the
// upstream spliced. Reads inside a long frame count as src's signs of life.
func (r *relayer) forward(h wsmw.Header) {
	r.s.armWrite(r.dst)
	err := relay.Forward(r.dst.conn, r.src.conn, h, r.splice, r.src.alive)
	if err != nil && !errors.Is(err, wsmw.ErrIncompleteFrame) { // src's own failure comes with its next read
		r.writeFailed(err)
	}
}

// gather appends a frame of a reassembled message; at the message's end it is
// inspected and written. It reports false when src failed.
func (r *relayer) gather(h wsmw.Header) bool {
	if err := r.asm.add(h, liveReader{r.src}); err != nil {
		r.s.readFailed(r.src, r.dst, err)
		return false
	}
	if h.Fin {
		r.mode = streamMsg
		r.finish()
	}
	return true
}

// finish inspects a reassembled message, inflated if it was compressed, and
// writes it to dst as the verdict says.
func (r *relayer) finish() {
	a := &r.asm
	payload, v := r.plaintext()
	if v.Action == Pass && r.msg != nil {
		m := r.msg
		m.OpCode, m.Payload, m.Length, m.Final = a.op, payload, int64(len(payload)), true
		v = r.s.chain.Inspect(m)
		m.Payload = nil
	}
	var err error
	switch v.Action {
	case Pass:
		if a.recode {
			err = r.writeMessage(payload)
		} else {
			err = r.writeFragments()
		}
	case Replace:
		// Uncompressed, or compressed by dst's own compression in terminate mode.
		err = r.writeMessage(v.Payload)
	case Close:
		r.policyClose(v)
	}
	if err != nil {
		r.writeFailed(err)
	}
}

// plaintext returns the reassembled message's payload, inflated if it was
// compressed, or a Close verdict when it cannot be.
func (r *relayer) plaintext() ([]byte, Verdict) {
	a := &r.asm
	if a.rsv&wsmw.RSV1 == 0 {
		return a.buf, Verdict{Action: Pass}
	}
	if r.shadowStale {
		return nil, Verdict{Action: Close, Code: wsmw.StatusInternalError, Reason: "compressed message cannot be inspected"}
	}
	var err error
	if a.plain, err = relay.Inflate(r.src.conn, a.plain[:0], a.buf); err != nil {
		return nil, inflateVerdict(err)
	}
	if a.op == wsmw.OpText && !utf8.Valid(a.plain) {
		return nil, Verdict{Action: Close, Code: wsmw.StatusInvalidPayload, Reason: "invalid utf-8 in text message"}
	}
	return a.plain, Verdict{Action: Pass}
}

// writeMessage writes payload to dst as one message with dst's compression, if any.
func (r *relayer) writeMessage(payload []byte) error {
	r.s.armWrite(r.dst)
	return r.dst.conn.Write(noCancel, wsmw.MessageType(r.asm.op), payload)
}

// writeFragments forwards the reassembled message with its original fragmentation.
func (r *relayer) writeFragments() error {
	a := &r.asm
	off := 0
	for i, n := range a.frags {
		h := wsmw.Header{Fin: i == len(a.frags)-1, OpCode: wsmw.OpContinuation}
		if i == 0 {
			h.OpCode, h.Rsv = a.op, a.rsv
		}
		r.s.armWrite(r.dst)
		if err := relay.WriteFrameInPlace(r.dst.conn, h, a.buf[off:off+n]); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// flush writes the frames relay.Forward gathered for dst, before the relayer
// may wait for src.
func (r *relayer) flush() {
	r.s.armWrite(r.dst)
	if err := relay.Flush(r.dst.conn); err != nil && !r.closed {
		r.writeFailed(err)
	}
}

// policyClose ends the session for an inspector's Close verdict.
func (r *relayer) policyClose(v Verdict) {
	r.s.policyClose(r.src, r.dst, v)
	r.closed = true
}

// writeFailed ends the forwarding of data after a failed write to dst.
func (r *relayer) writeFailed(err error) {
	r.s.writeFailed(r.src, r.dst, err)
	r.closed = true
}

// assembly is a message being reassembled, with the sizes of its fragments.
type assembly struct {
	buf    []byte
	frags  []int
	op     wsmw.OpCode
	rsv    byte
	recode bool   // terminate mode: written as one message with dst's compression
	plain  []byte // the inflated payload of a compressed message, reused
}

// start begins a message whose first frame has header h.
func (a *assembly) start(h wsmw.Header, recode bool) {
	a.buf, a.frags = a.buf[:0], a.frags[:0]
	a.op, a.rsv, a.recode = h.OpCode, h.Rsv, recode
}

// add appends the payload of a frame with header h, read from src.
func (a *assembly) add(h wsmw.Header, src io.Reader) error {
	start := len(a.buf)
	a.buf = append(a.buf, make([]byte, h.Length)...)[:start+int(h.Length)]
	if _, err := io.ReadFull(src, a.buf[start:]); err != nil {
		return err
	}
	a.frags = append(a.frags, int(h.Length))
	return nil
}

// liveReader reads the current frame's payload from a leg, counting each read as
// a sign of life: a peer in the middle of a long frame cannot answer a ping.
type liveReader struct{ l *leg }

func (r liveReader) Read(p []byte) (int, error) {
	n, err := r.l.payload.Read(p)
	if n > 0 {
		r.l.alive()
	}
	return n, err
}

// compressed reports whether permessage-deflate is in effect on c.
func compressed(c *wsmw.Conn) bool {
	_, ok := c.Compression()
	return ok
}

// noCancel is the context of writes that only deadlines interrupt.
var noCancel = context.Background()
