package proxy

import "time"

// trimAfterWait is how long a relayer whose stack has grown must have waited
// for its source before it hands off again (see stackTrim).
const trimAfterWait = time.Second

// stackTrim decides when a relayer hands its loop over to a fresh goroutine.
//
// A goroutine's stack starts at 2 KiB and doubles whenever a call chain needs
// more. Go shrinks it back only while the goroutine uses less than a quarter
// of it, which a goroutine parked in a read never does, so a relay goroutine
// that once went deep (through crypto/tls, or forwarding a large frame) would
// keep 4 or 8 KiB for the rest of its session, most of which is usually spent
// waiting. So when a relayer whose stack has grown is about to wait for its
// source, it continues in a new goroutine, which waits on 2 KiB, and the grown
// one exits. A hand-off costs a goroutine start and a stack copy when the new
// goroutine grows in turn, so a busy relayer hands off once, and again only
// after a wait of trimAfterWait or more: a session that sends now and then
// waits on 2 KiB between its messages.
type stackTrim struct {
	handedOff bool
	waitStart time.Time     // when the wait being timed began; zero if none is
	lastWait  time.Duration // how long the last timed wait lasted
}

// handOff is called when a relayer whose stack has grown is about to wait:
// it reports whether the relayer should continue in a fresh goroutine.
func (t *stackTrim) handOff() bool {
	busy := t.handedOff && t.lastWait < trimAfterWait
	t.handedOff = true
	t.waitStart = time.Now()
	return !busy
}

// woke is called when a relayer's read returned: it ends the timing of the wait.
func (t *stackTrim) woke() {
	if !t.waitStart.IsZero() {
		t.lastWait = time.Since(t.waitStart)
		t.waitStart = time.Time{}
	}
}
