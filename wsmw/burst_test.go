//go:build linux

package wsmw

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// burstRecorder is a burster that reads each frame it is handed and records it.
type burstRecorder struct {
	c        *Conn
	frames   []string // opcode and payload of each frame handed to Step
	err      error    // what NextFrame returned last, if it failed
	waits    int      // BeforeWait calls
	heldBuf  bool     // a read buffer was held at some BeforeWait
	stepStop int      // Step returns false after this many frames (0: never)
	waitStop int      // BeforeWait returns false at this call (0: never)
	onWait   func()   // called by BeforeWait, when set
}

func (b *burstRecorder) Step() bool {
	h, p, err := b.c.NextFrame()
	if err != nil {
		b.err = err
		return false
	}
	data, err := io.ReadAll(p)
	if err != nil {
		b.err = err
		return false
	}
	b.frames = append(b.frames, fmt.Sprintf("%v %s", h.OpCode, data))
	return b.stepStop == 0 || len(b.frames) < b.stepStop
}

func (b *burstRecorder) BeforeWait() bool {
	b.waits++
	if b.c.rd.bp != nil {
		b.heldBuf = true
	}
	if b.onWait != nil {
		b.onWait()
	}
	return b.waitStop == 0 || b.waits < b.waitStop
}

// readSyscalls returns how many read system calls the process has made.
func readSyscalls(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/io")
	if err != nil {
		t.Skipf("no read syscall counter: %v", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "syscr: "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Skip("no syscr line in /proc/self/io")
	return 0
}

// TestBurstWaitsWithoutAnExtraRead: frames that arrive one at a time, each
// only once the burst waits, are handed to Step in order with about one read
// each, where a plain read loop needs two (the read that takes the frame, and
// the one that finds the socket empty before it waits): after a read that
// emptied the socket the burst waits without reading again. No read buffer
// is held while it waits. A burst that ends early (a wait that outlasted
// burstWindow on a loaded machine, say) is begun again after one frame read
// the usual way, as a relayer does.
func TestBurstWaitsWithoutAnExtraRead(t *testing.T) {
	const n = 60
	c, raw := tcpPair(t, false, connConfig{})
	sent := make(chan int, n)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range sent {
			if _, err := raw.Write(clientFrame(OpText, fmt.Sprintf("message %d", i))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	b := &burstRecorder{c: c}
	queued := 0
	b.onWait = func() {
		// The next frame goes out once the previous one was handed over.
		if queued == len(b.frames) && queued < n {
			sent <- queued
			queued++
		}
	}
	before := readSyscalls(t)
	restarts := 0
	for len(b.frames) < n {
		if c.burst(b) {
			t.Fatalf("Step ended the burst: %v", b.err)
		}
		if len(b.frames) < n {
			restarts++
			b.onWait()
			b.Step()
		}
	}
	reads := readSyscalls(t) - before
	close(sent)
	wg.Wait()

	for i, f := range b.frames {
		if want := fmt.Sprintf("%v message %d", OpText, i); f != want {
			t.Fatalf("frame %d: %q, want %q", i, f, want)
		}
	}
	if b.heldBuf {
		t.Error("a read buffer was held while the burst waited")
	}
	if reads > n+n/2 {
		t.Errorf("%d read system calls for %d frames, want at most %d (a plain read loop needs %d)", reads, n, n+n/2, 2*n)
	}
	t.Logf("%d read system calls for %d frames; the burst was begun again %d times", reads, n, restarts)
}

// TestBurstLeavesWhatItCannotHandOver: a frame whose payload is not all
// buffered ends the burst with its first part kept for NextFrame, which
// completes it when the rest arrives.
func TestBurstLeavesWhatItCannotHandOver(t *testing.T) {
	c, raw := tcpPair(t, false, connConfig{})
	big := clientFrame(OpBinary, strings.Repeat("x", 3000))
	b := &burstRecorder{c: c}
	b.onWait = func() {
		if b.waits == 2 { // the probe is the first; the burst waits for the first time now
			raw.Write(concat(clientFrame(OpText, "whole"), big[:100]))
		}
	}
	if c.burst(b) {
		t.Error("the burst reported that Step ended it")
	}
	if len(b.frames) != 1 || b.frames[0] != fmt.Sprintf("%v whole", OpText) {
		t.Fatalf("frames handed over: %q, want the whole one only", b.frames)
	}
	go raw.Write(big[100:])
	h, p, err := c.NextFrame()
	if err != nil || h.OpCode != OpBinary || h.Length != 3000 {
		t.Fatalf("after the burst: %+v %v", h, err)
	}
	if data, err := io.ReadAll(p); err != nil || string(data) != strings.Repeat("x", 3000) {
		t.Fatalf("payload of %d bytes, %v", len(data), err)
	}
}

// TestBurstFindsTheEndAfterTheLastFrame: a peer's last frame and its FIN
// arrive together, so the read that takes the frame also takes the FIN and
// the socket never becomes readable again: the burst's wait is bounded, and
// the next read finds the end, well within a second.
func TestBurstFindsTheEndAfterTheLastFrame(t *testing.T) {
	for _, how := range []string{"FIN", "reset"} {
		t.Run(how, func(t *testing.T) {
			c, raw := tcpPair(t, false, connConfig{})
			b := &burstRecorder{c: c}
			b.onWait = func() {
				if b.waits == 2 {
					if how == "reset" {
						raw.(*net.TCPConn).SetLinger(0)
					}
					raw.Write(clientFrame(OpText, "last"))
					raw.Close()
				}
			}
			start := time.Now()
			done := make(chan struct{})
			var err error
			go func() {
				defer close(done)
				c.burst(b)
				_, _, err = c.NextFrame()
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("the end was not found")
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("the end was found after %v", d)
			}
			if err == nil {
				t.Errorf("NextFrame after the end: no error (frames %q)", b.frames)
			}
			if len(b.frames) > 1 {
				t.Errorf("frames handed over: %q", b.frames)
			}
		})
	}
}

// TestBurstEnds: Step and BeforeWait each end a burst by returning false,
// and only Step's ending is reported.
func TestBurstEnds(t *testing.T) {
	t.Run("Step", func(t *testing.T) {
		c, raw := tcpPair(t, false, connConfig{})
		raw.Write(concat(clientFrame(OpText, "a"), clientFrame(OpText, "b"), clientFrame(OpText, "c")))
		b := &burstRecorder{c: c, stepStop: 2}
		if !c.burst(b) {
			t.Error("the burst did not report that Step ended it")
		}
		if len(b.frames) != 2 {
			t.Errorf("frames handed over: %q, want 2", b.frames)
		}
		if h, p, err := c.NextFrame(); err != nil || h.OpCode != OpText {
			t.Fatalf("the third frame: %v %v", h, err)
		} else if data, _ := io.ReadAll(p); string(data) != "c" {
			t.Errorf("the third frame: %q", data)
		}
	})
	t.Run("BeforeWait", func(t *testing.T) {
		c, _ := tcpPair(t, false, connConfig{})
		b := &burstRecorder{c: c, waitStop: 2}
		if c.burst(b) {
			t.Error("the burst reported that Step ended it")
		}
		if b.waits != 2 || len(b.frames) != 0 {
			t.Errorf("%d waits, %d frames; want 2 and 0", b.waits, len(b.frames))
		}
	})
}

// TestBurstKeepsTheReadDeadline: a burst bounds its waits by burstWindow
// without losing the deadline set with SetReadDeadline, before it or while
// it waits: the read after the burst times out at that deadline, not at the
// burst's bound and not never.
func TestBurstKeepsTheReadDeadline(t *testing.T) {
	for _, when := range []string{"before", "during"} {
		t.Run(when, func(t *testing.T) {
			c, _ := tcpPair(t, false, connConfig{})
			start := time.Now()
			deadline := start.Add(3 * burstWindow)
			if when == "before" {
				c.SetReadDeadline(deadline)
			} else {
				time.AfterFunc(burstWindow/2, func() { c.SetReadDeadline(deadline) })
			}
			c.burst(&burstRecorder{c: c})
			if d := time.Since(start); d > 2*burstWindow+time.Second/2 {
				t.Errorf("the burst lasted %v, want about %v", d, burstWindow)
			}
			_, _, err := c.NextFrame()
			d := time.Since(start)
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("NextFrame after the burst: %v, want a timeout", err)
			}
			if d < 3*burstWindow-10*time.Millisecond || d > 3*burstWindow+time.Second {
				t.Errorf("the read timed out after %v, want %v", d, 3*burstWindow)
			}
		})
	}
}

// TestBurstSparseFrames: once a burst's wait has ended by its bound, no burst
// begins while frames come further apart than burstWindow (each would end
// the same way, a wake-up for nothing); one begins again as soon as two come
// closer together.
func TestBurstSparseFrames(t *testing.T) {
	c, raw := tcpPair(t, false, connConfig{})
	start := time.Now()
	c.burst(&burstRecorder{c: c})
	if d := time.Since(start); d < burstWindow-10*time.Millisecond {
		t.Fatalf("the silent burst ended after %v, before its bound", d)
	}
	time.Sleep(burstWindow + burstWindow/2)
	b := &burstRecorder{c: c}
	if c.burst(b) || b.waits != 0 {
		t.Fatalf("a burst began %v after the last one ended by its bound (%d waits)", burstWindow+burstWindow/2, b.waits)
	}
	b.onWait = func() {
		if b.waits == 2 {
			raw.Write(clientFrame(OpText, "soon"))
		}
	}
	b.stepStop = 1
	if !c.burst(b) || len(b.frames) != 1 {
		t.Fatalf("a burst right after the last attempt: Step not ended by the frame (frames %q, %d waits)", b.frames, b.waits)
	}
}
