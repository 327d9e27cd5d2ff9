package proxy

import (
	"sync/atomic"
	"time"
)

// coarseClock is the time to within a tick, for checks made on every frame
// (is a leg's write deadline due for renewal?) that need not pay for
// time.Now each time. It ticks only while there are sessions: start is
// called as each session begins, and the tick stops when none is left.
type coarseClock struct {
	tick    time.Duration
	now     atomic.Int64 // unix nanoseconds, at most tick behind
	running atomic.Bool
	active  func() int64 // sessions alive
	timer   *time.Timer
}

func newCoarseClock(tick time.Duration, active func() int64) *coarseClock {
	c := &coarseClock{tick: tick, active: active}
	c.timer = time.AfterFunc(time.Hour, c.update)
	c.timer.Stop()
	return c
}

// start makes sure the clock ticks, for a session that begins.
func (c *coarseClock) start() {
	if c.running.CompareAndSwap(false, true) {
		c.now.Store(time.Now().UnixNano())
		c.timer.Reset(c.tick)
	}
}

// update is the tick.
func (c *coarseClock) update() {
	c.now.Store(time.Now().UnixNano())
	if c.active() == 0 {
		c.running.Store(false)
		// A session that began just now may have found the clock running:
		// keep ticking for it.
		if c.active() == 0 || !c.running.CompareAndSwap(false, true) {
			return
		}
	}
	c.timer.Reset(c.tick)
}

// unixNano returns the time in unix nanoseconds, at most a tick behind.
func (c *coarseClock) unixNano() int64 { return c.now.Load() }
