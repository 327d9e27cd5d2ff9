package integration

// checkLeaks: a per-test goroutine and file-descriptor leak check. The package is
// shared with other test files, so a TestMain with goleak.VerifyTestMain is not
// an option; instead each test that wants the check calls checkLeaks(t) first
// thing, and the check runs in the test's last Cleanup (Cleanups run in reverse
// order, so every server the test started has been shut down by then).

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// settle is how long goroutines and descriptors get to return to baseline.
const settle = 5 * time.Second

// ignoredStacks are stack fragments of goroutines that are not leaks: other
// tests paused in t.Parallel, and process-wide goroutines that libraries start
// and keep (or end on their own schedule): Go's signal handling, Caddy's
// signal trap and certmagic's cache maintenance, and certmagic's lock-file
// refresher, which notices within 5 s that Caddy's storage-cleaning lock is
// gone. Nothing of wsmw, proxy or caddymodule is ignored.
var ignoredStacks = []string{
	"testing.(*T).Parallel",
	"testing.runTests",
	"testing.(*M).",
	"os/signal.signal_recv",
	"os/signal.loop",
	"runtime.ensureSigM",
	"github.com/caddyserver/caddy/v2.trapSignalsPosix",
	"github.com/caddyserver/caddy/v2.trapSignalsCrossPlatform",
	"github.com/caddyserver/certmagic.(*Cache).maintainAssets",
	"github.com/caddyserver/certmagic.keepLockfileFresh",
}

var warmOnce sync.Once

// warmup makes the runtime create what it creates once per process (the
// network poller's epoll descriptor and its wakeup pipe), so that it is part of
// the first test's baseline instead of counting as its leak.
func warmup() {
	warmOnce.Do(func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			s, _ := ln.Accept()
			if s != nil {
				s.Close()
			}
			c.Close()
		}
		ln.Close()
	})
}

// goroutines returns the stacks of all goroutines by id.
func goroutines() map[int]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := make(map[int]string)
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		s := string(g)
		rest, ok := strings.CutPrefix(s, "goroutine ")
		if !ok {
			continue
		}
		idStr, _, ok := strings.Cut(rest, " ")
		if !ok {
			continue
		}
		id, err := strconv.Atoi(idStr)
		if err != nil {
			continue
		}
		out[id] = s
	}
	return out
}

func ignoredStack(s string) bool {
	for _, frag := range ignoredStacks {
		if strings.Contains(s, frag) {
			return true
		}
	}
	return false
}

// openFDs returns the open file descriptors of the process with their targets.
func openFDs() map[string]string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	out := make(map[string]string, len(ents))
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out[e.Name()] = target
	}
	return out
}

// checkLeaks snapshots the goroutines and open file descriptors now, and checks
// when the test ends that no goroutine started since is still running (apart
// from known background ones) and that the descriptor count is back to the
// baseline, allowing settle for sessions to wind down.
func checkLeaks(t testing.TB) {
	t.Helper()
	warmup()
	runtime.GC()
	baseG := goroutines()
	baseFD := openFDs()
	t.Cleanup(func() {
		start := time.Now()
		deadline := start.Add(settle)
		for {
			var extra []string
			for id, s := range goroutines() {
				if _, ok := baseG[id]; ok || ignoredStack(s) {
					continue
				}
				extra = append(extra, s)
			}
			fds := openFDs()
			if len(extra) == 0 && len(fds) <= len(baseFD) {
				if d := time.Since(start); d > time.Second {
					t.Logf("leak check: settled after %v", d.Round(time.Millisecond))
				}
				return
			}
			if time.Now().After(deadline) {
				sort.Strings(extra)
				var newFDs []string
				for fd, target := range fds {
					if old, ok := baseFD[fd]; !ok || old != target {
						newFDs = append(newFDs, fd+" -> "+target)
					}
				}
				sort.Strings(newFDs)
				msg := fmt.Sprintf("leak check: %d goroutine(s) started by the test still running; %d open fds (baseline %d)",
					len(extra), len(fds), len(baseFD))
				if len(newFDs) > 0 {
					msg += "\nnew fds: " + strings.Join(newFDs, ", ")
				}
				if len(extra) > 10 {
					extra = append(extra[:10], fmt.Sprintf("... and %d more", len(extra)-10))
				}
				t.Errorf("%s\n%s", msg, strings.Join(extra, "\n\n"))
				return
			}
			time.Sleep(25 * time.Millisecond)
		}
	})
}
