package testkit

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// CheckGoroutines, called first thing in a test, checks after the test and
// all its cleanups that no goroutine it started is still running (goleak).
func CheckGoroutines(t testing.TB) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// InCI reports whether a missing third-party peer must fail the test instead
// of skipping it (CI sets CI=true).
func InCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v == "true" || v == "1"
}

// RequirePeer skips the test (locally) or fails it (in CI) when ok is false:
// a peer program (node, chromium, python) is missing.
func RequirePeer(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s (CI=true: a missing peer fails instead of skipping)", msg)
	}
	t.Skip(msg)
}

// SyncBuffer is a text buffer that a child process's output and the test may
// use at the same time.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (n int, err error) {
	b.mu.Lock()
	n, err = b.b.Write(p)
	b.mu.Unlock()
	return n, err
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// HeapGrowth collects garbage, then samples the heap in use every 20 ms until
// the returned function is called; that returns how far the heap grew above
// where it started, at most: whether the code under test buffers what it should not.
func HeapGrowth() (stop func() int64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	peak.Store(base)
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() int64 {
		close(done)
		<-sampled
		return int64(peak.Load()) - int64(base)
	}
}
