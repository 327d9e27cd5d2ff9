package proxy

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/internal/testkit"
)

// TestCoarseClock: the clock follows the time to within a tick while
// sessions are alive, stops ticking when none is left, and starts again
// with the next one.
func TestCoarseClock(t *testing.T) {
	var active atomic.Int64
	c := newCoarseClock(10*time.Millisecond, active.Load)
	active.Store(1)
	c.start()
	if lag := time.Now().UnixNano() - c.unixNano(); lag < 0 || lag > int64(50*time.Millisecond) {
		t.Fatalf("clock %v behind right after start", time.Duration(lag))
	}
	time.Sleep(100 * time.Millisecond)
	if lag := time.Now().UnixNano() - c.unixNano(); lag > int64(60*time.Millisecond) {
		t.Fatalf("clock %v behind while a session is alive, tick 10ms", time.Duration(lag))
	}
	active.Store(0)
	if !testkit.Eventually(time.Second, func() bool { return !c.running.Load() }) {
		t.Fatal("the clock still ticks with no session alive")
	}
	stopped := c.unixNano()
	time.Sleep(50 * time.Millisecond)
	if c.unixNano() != stopped {
		t.Fatal("the clock moved while stopped")
	}
	active.Store(1)
	c.start()
	if !c.running.Load() || c.unixNano() == stopped {
		t.Fatal("the clock did not start again with a new session")
	}
	active.Store(0)
	testkit.Eventually(time.Second, func() bool { return !c.running.Load() })
}
