//go:build unix

package wsmw

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// burst hands c's frames to b as they arrive, for as long as each arrives
// whole, and waits for the socket between them without reading it once more
// to find it empty, as Conn's other reads do.
//
// Every read of a Go socket first forgets whether the socket became readable
// since the last read (so that a wake-up reported earlier is not mistaken for
// new data), then reads, and waits only when that read finds nothing: one
// system call per wait that returns no data. A burst makes a single
// RawConn.Read last for many frames instead. A read that returns less than
// the buffer holds has emptied the socket, so the burst waits next without
// reading: bytes that arrive after that read make the socket readable again,
// and the wait returns at once if they already have. Event loops such as
// nginx's read sockets this way (nginx learns of a peer's FIN that came with
// the data from epoll, which Go does not pass on: burstWindow covers that).
// For small messages it saves a third of the system calls of relaying them.
//
// b.Step is called for each frame whose header and payload are all buffered
// and that is not a close: it reads the frame (NextFrame and its payload) on
// this goroutine, under the read lock the burst holds. b.BeforeWait is called
// once when the burst begins and then before each wait; the burst ends when it
// returns false, when b.Step does, when a frame is not all buffered (or is a
// close), or when the socket reports an error or its end. burst reports
// whether b.Step ended it. Whatever the burst leaves buffered, or the error it
// met, the next read returns as usual.
func (c *Conn) burst(b burster) (stepEnded bool) {
	r := &c.rd
	if r.rawFn == nil || c.lockRead() != nil {
		return false
	}
	defer r.mu.Unlock()
	if r.err != nil || r.remaining > 0 || r.buffered() > 0 || r.pendErr != nil {
		return false
	}
	now := time.Now()
	if r.sparse(now) {
		return false
	}
	r.release()
	soft := c.boundWait(now.Add(burstWindow))
	r.bst = burstState{b: b, on: true}
	// An error of the wait itself (a deadline, the socket closed) is left
	// for the next read to meet, as the state of the socket then says.
	err := c.rc.Read(r.rawFn)
	stepEnded = r.bst.stepEnded
	r.bst = burstState{}
	if soft {
		c.unboundWait()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			r.bst.quietAt = max(uint32(time.Now().UnixMilli()), 1)
		}
	}
	return stepEnded
}

// sparse reports whether frames come too far apart for a burst to pay: its
// wait would end by its bound (a wake-up and two deadline changes) before
// the next frame came. After a burst ended that way, a burst begins again
// only when a frame came within burstWindow of the previous one (or of that
// end); until then each frame is read the usual way.
func (r *reader) sparse(now time.Time) bool {
	q := r.bst.quietAt
	if q == 0 {
		return false
	}
	ms := max(uint32(now.UnixMilli()), 1)
	if time.Duration(ms-q)*time.Millisecond >= burstWindow {
		r.bst.quietAt = ms
		return true
	}
	r.bst.quietAt = 0
	return false
}

// burstWindow bounds each wait of a burst. A read that returns less than the
// buffer cannot tell whether the peer's FIN (or a reset) came with the data;
// if it did, the socket will not become readable again, and only a read would
// find the end. So a burst's waits end after burstWindow of silence: the
// burst then ends, and the next read, the usual way, finds the end if there
// is one or waits without a deadline. A busy connection begins a burst every
// burstWindow at most; an idle one waits the usual way, and so does one whose
// frames come further apart than burstWindow (see sparse).
const burstWindow = 100 * time.Millisecond

// boundWait sets the socket's read deadline to soft unless the deadline set
// with SetReadDeadline comes first; it reports whether it did. The deadline
// may be set concurrently: whatever SetReadDeadline stored last is applied
// again if it was overwritten.
func (c *Conn) boundWait(soft time.Time) bool {
	dl := c.readDL.Load()
	if dl != 0 && dl <= soft.UnixNano() {
		return false
	}
	_ = c.nc.SetReadDeadline(soft)
	if c.readDL.Load() != dl {
		c.unboundWait()
		return false
	}
	return true
}

// unboundWait applies the deadline set with SetReadDeadline to the socket
// again, until no SetReadDeadline overtook it.
func (c *Conn) unboundWait() {
	for {
		dl := c.readDL.Load()
		var t time.Time
		if dl != 0 {
			t = time.Unix(0, dl)
		}
		_ = c.nc.SetReadDeadline(t)
		if c.readDL.Load() == dl {
			return
		}
	}
}

// burstRead is the RawConn callback of a burst: it returns false to wait for
// readiness, true to end the burst.
func (r *reader) burstRead(fd uintptr) bool {
	st := &r.bst
	if !st.started {
		st.started = true
		if !st.b.BeforeWait() {
			return true
		}
	}
	for {
		for r.wholeFrame() {
			if !st.b.Step() {
				st.stepEnded = true
				return true
			}
		}
		if r.err != nil || r.buffered() > 0 || r.remaining > 0 {
			return true
		}
		r.release()
		if st.drained {
			st.drained = false
			return !st.b.BeforeWait()
		}
		switch n, err := r.burstFill(fd); {
		case err == syscall.EAGAIN:
			return !st.b.BeforeWait()
		case err != nil:
			r.pendErr = err
			return true
		case n == 0:
			return true // the end of the stream: left to the next read
		default:
			st.drained = n < readBufSize
		}
	}
}

// burstFill reads into a pooled buffer, or a new one if the pool is empty
// (the proxy's BeforeWait ends a burst whose stack grew doing so, before it
// waits); it returns 0 and no error at the end of the stream, which the next
// read finds again.
func (r *reader) burstFill(fd uintptr) (int, error) {
	return r.readSocket(fd, getReadBuf())
}

// wholeFrame reports whether the next frame is buffered with all its payload
// and is not a close, so that reading it takes no read from the socket.
func (r *reader) wholeFrame() bool {
	if r.err != nil || r.remaining > 0 || r.buffered() < 2 {
		return false
	}
	b := r.bp[r.r:r.w]
	if OpCode(b[0]&0x0f) == OpClose {
		return false
	}
	n := headerSize(b[0], b[1])
	if len(b) < n {
		return false
	}
	length := uint64(b[1] & 0x7f)
	switch length {
	case 126:
		length = uint64(b[2])<<8 | uint64(b[3])
	case 127:
		return false // 64 KiB or more: never whole in the buffer
	}
	return uint64(len(b)-n) >= length
}
