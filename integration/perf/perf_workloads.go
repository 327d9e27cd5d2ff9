package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// sample is one measurement: one workload, one variant, one round. Figures that
// do not apply (proxy CPU without a proxy, latency of a stream) are NaN.
type sample struct {
	msgsPerSec     float64 // echoes received by the clients per second, all sessions together
	mbPerSec       float64 // echoed payload, MB (10^6 bytes) per second
	p50, p99       float64 // round-trip latency, µs
	cpuPerMsg      float64 // proxy CPU µs per forwarded message (each echo is forwarded twice: up and down)
	syscallsPerMsg float64 // proxy read/write system calls per forwarded message (splice not counted)
	allocsPerFrame float64 // proxy heap allocations per forwarded frame
	bytesPerFrame  float64 // proxy heap bytes allocated per forwarded frame
	busy           float64 // CPU used by harness and proxy / (wall time × cores)
	other          float64 // CPU used by other processes of the machine / (wall time × cores)
}

func (s sample) brief() string {
	out := fmt.Sprintf("%9.0f msg/s %8.1f MB/s", s.msgsPerSec, s.mbPerSec)
	if !math.IsNaN(s.p50) {
		out += fmt.Sprintf("  p50 %7.1fµs p99 %7.1fµs", s.p50, s.p99)
	}
	if !math.IsNaN(s.cpuPerMsg) {
		out += fmt.Sprintf("  proxy %6.2f µs/msg %5.2f rw-syscalls/msg %5.2f allocs/frame", s.cpuPerMsg, s.syscallsPerMsg, s.allocsPerFrame)
	}
	return out + fmt.Sprintf("  busy %3.0f%% other %3.0f%%", 100*s.busy, 100*s.other)
}

var nan = math.NaN()

func (h *harness) measure(w workload, v *variant, round int) (sample, error) {
	switch w.kind {
	case kindPingPong:
		return h.pingPong(w, v, round)
	case kindStream:
		return h.stream(w, v, round)
	}
	return sample{}, fmt.Errorf("workload %s is not timed", w.name)
}

// phases of a timed measurement, read by the client goroutines.
const (
	phaseWarmup = iota
	phaseMeasure
	phaseStop
)

// interval runs the warmup, then one measured interval of -duration, and
// returns the counters at both ends and the exact measured wall time.
func (h *harness) interval(w workload, v *variant, round int, phase *atomic.Int32) (s0, s1 snapshot, wall time.Duration, err error) {
	time.Sleep(h.opts.warmup)
	prof := h.profilePath(w, v, round)
	if prof != "" {
		if _, err := v.child.call("profile-start " + prof); err != nil {
			phase.Store(phaseStop)
			return s0, s1, 0, err
		}
	}
	if s0, err = h.snap(v); err != nil {
		phase.Store(phaseStop)
		return
	}
	t0 := time.Now()
	phase.Store(phaseMeasure)
	time.Sleep(h.opts.duration)
	phase.Store(phaseStop)
	wall = time.Since(t0)
	if s1, err = h.snap(v); err != nil {
		return
	}
	if prof != "" {
		_, err = v.child.call("profile-stop")
	}
	return
}

// fill computes the proxy-side figures of s from the interval's counters.
func (s *sample) fill(s0, s1 snapshot, forwardedMsgs, forwardedFrames int64) {
	all := s1.t.Sub(s0.t).Seconds()
	cpu := s1.childCPU - s0.childCPU
	ours := s1.selfCPU - s0.selfCPU + cpu
	s.busy = ours.Seconds() / (all * float64(runtime.NumCPU()))
	s.other = max(0, (s1.machine-s0.machine-ours).Seconds()/(all*float64(runtime.NumCPU())))
	s.cpuPerMsg, s.syscallsPerMsg, s.allocsPerFrame, s.bytesPerFrame = nan, nan, nan, nan
	if s0.mallocs == 0 || forwardedMsgs == 0 {
		return // direct: no proxy
	}
	s.cpuPerMsg = float64(cpu.Microseconds()) / float64(forwardedMsgs)
	s.syscallsPerMsg = float64(s1.syscalls-s0.syscalls) / float64(forwardedMsgs)
	s.allocsPerFrame = float64(s1.mallocs-s0.mallocs) / float64(forwardedFrames)
	s.bytesPerFrame = float64(s1.bytes-s0.bytes) / float64(forwardedFrames)
}

// pingPong: each of w.sessions sessions sends one message and waits for its
// echo, again and again. Latency is from before the write to the last byte of the echo.
func (h *harness) pingPong(w workload, v *variant, round int) (sample, error) {
	conns, err := dialAll(v.url, w.sessions, 16)
	if err != nil {
		return sample{}, err
	}
	type sessStat struct {
		n   int64
		lat []time.Duration
		err error
	}
	stats := make([]sessStat, len(conns))
	var phase atomic.Int32
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &stats[i]
			payload := make([]byte, w.size)
			for j := range payload {
				payload[j] = byte(i + j)
			}
			buf := make([]byte, w.size)
			st.lat = make([]time.Duration, 0, 1<<14)
			for phase.Load() != phaseStop {
				t0 := time.Now()
				if err := c.WriteMessage(websocket.BinaryMessage, payload); err != nil {
					st.err = err
					break
				}
				_, r, err := c.NextReader()
				if err == nil {
					_, err = io.ReadFull(r, buf)
				}
				if err != nil {
					st.err = err
					break
				}
				d := time.Since(t0)
				if buf[0] != payload[0] || buf[w.size-1] != payload[w.size-1] {
					st.err = errors.New("echo differs from the message sent")
					break
				}
				if phase.Load() == phaseMeasure {
					st.n++
					st.lat = append(st.lat, d)
				}
			}
			if st.err != nil {
				c.Close()
				return
			}
			closeGracefully(c)
		}()
	}
	s0, s1, wall, ierr := h.interval(w, v, round, &phase)
	wg.Wait()
	if ierr != nil {
		return sample{}, ierr
	}
	var n int64
	var lat []time.Duration
	for _, st := range stats {
		if st.err != nil {
			return sample{}, fmt.Errorf("session failed: %w", st.err)
		}
		n += st.n
		lat = append(lat, st.lat...)
	}
	if err := h.waitQuiet(v, 10*time.Second); err != nil {
		return sample{}, err
	}
	if n == 0 {
		return sample{}, errors.New("no message was echoed during the measurement")
	}
	slices.Sort(lat)
	s := sample{
		msgsPerSec: float64(n) / wall.Seconds(),
		p50:        float64(lat[len(lat)*50/100].Nanoseconds()) / 1e3,
		p99:        float64(lat[len(lat)*99/100].Nanoseconds()) / 1e3,
	}
	s.mbPerSec = s.msgsPerSec * float64(w.size) / 1e6
	s.fill(s0, s1, 2*n, n*int64(framesUp(w.size))+n)
	return s, nil
}

// stream: one session's writer sends messages as fast as the path takes them,
// while a reader goroutine reads the echoes.
func (h *harness) stream(w workload, v *variant, round int) (sample, error) {
	conns, err := dialAll(v.url, 1, 1)
	if err != nil {
		return sample{}, err
	}
	c := conns[0]
	var phase atomic.Int32
	var sent, recv int64
	var werr, rerr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // writer
		defer wg.Done()
		payload := make([]byte, w.size)
		for j := range payload {
			payload[j] = byte(j)
		}
		for phase.Load() != phaseStop {
			if err := c.WriteMessage(websocket.BinaryMessage, payload); err != nil {
				werr = err
				c.Close()
				return
			}
			if phase.Load() == phaseMeasure {
				sent++
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), deadline)
		_ = c.SetReadDeadline(deadline)
	}()
	go func() { // reader
		defer wg.Done()
		buf := make([]byte, w.size)
		for {
			_, r, err := c.NextReader()
			if err == nil {
				var k int
				k, err = io.ReadFull(r, buf)
				if err == nil && (k != w.size || buf[w.size-1] != byte(w.size-1)) {
					err = errors.New("echo differs from the message sent")
				}
			}
			if err != nil {
				if !isClose(err) {
					rerr = err
				}
				c.Close()
				return
			}
			if phase.Load() == phaseMeasure {
				recv++
			}
		}
	}()
	s0, s1, wall, ierr := h.interval(w, v, round, &phase)
	wg.Wait()
	switch {
	case ierr != nil:
		return sample{}, ierr
	case rerr != nil:
		return sample{}, fmt.Errorf("reader: %w", rerr)
	case werr != nil:
		return sample{}, fmt.Errorf("writer: %w", werr)
	}
	if err := h.waitQuiet(v, 10*time.Second); err != nil {
		return sample{}, err
	}
	if recv == 0 {
		return sample{}, errors.New("no message was echoed during the measurement")
	}
	s := sample{msgsPerSec: float64(recv) / wall.Seconds(), p50: nan, p99: nan}
	s.mbPerSec = s.msgsPerSec * float64(w.size) / 1e6
	s.fill(s0, s1, sent+recv, sent*int64(framesUp(w.size))+recv)
	return s, nil
}

// idleRow is the memory held by idle sessions through one variant.
type idleRow struct {
	variant  string
	sessions int
	capped   string // why fewer sessions than asked, if so
	setup    time.Duration

	parentPer     float64 // this process (clients + upstream): heap+stack growth per session
	childHeapPer  float64 // proxy child: live heap growth per session
	childStackPer float64 // proxy child: goroutine stack growth per session
	childRSSPer   float64 // proxy child: RSS growth per session
	goroutinesPer float64 // proxy child: goroutines per session
	childFdsPer   float64 // proxy child: descriptors per session
	wholePer      float64 // (parent + child growth) per session, minus direct's parent growth per session
	slabPer       float64 // kernel slab growth per session, system-wide (NaN where unreadable)
	kernelPer     float64 // slabPer minus direct's: the proxy's kernel memory per session
}

type idleReport struct {
	requested int
	rows      []idleRow
}

// runIdle opens n idle sessions through each variant in turn and measures the
// memory they hold once settled and garbage-collected.
func (h *harness) runIdle(n int) (*idleReport, error) {
	rep := &idleReport{requested: n}
	directParent, directSlab := nan, nan
	for _, v := range h.variants {
		row, err := h.idleOne(v, n)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", v.name, err)
		}
		if v.name == "direct" {
			directParent, directSlab = row.parentPer, row.slabPer
		}
		rep.rows = append(rep.rows, row)
	}
	for i := range rep.rows {
		r := &rep.rows[i]
		if r.variant == "direct" {
			r.wholePer, r.kernelPer = 0, 0
		} else {
			r.wholePer = r.parentPer + r.childHeapPer + r.childStackPer - directParent
			r.kernelPer = r.slabPer - directSlab
		}
	}
	return rep, nil
}

func (h *harness) idleOne(v *variant, n int) (idleRow, error) {
	row := idleRow{variant: v.name}
	if err := h.waitQuiet(v, 10*time.Second); err != nil {
		return row, err
	}
	self := os.Getpid()
	heap0, stack0 := heapAndStack()
	var c0 childStats
	childFds0 := 0
	if v.child != nil {
		var err error
		if c0, err = v.child.call("memstats"); err != nil {
			return row, err
		}
		childFds0 = fdCount(v.child.pid())
	}
	selfFds0 := fdCount(self)
	slab0, slabOK := slabBytes()

	// Open the sessions in batches, keeping both processes' descriptors within
	// RLIMIT_NOFILE: descriptors per session are measured on the first batch.
	const margin = 256
	limit := int(h.nofile) - margin
	start := time.Now()
	var conns []*websocket.Conn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for len(conns) < n {
		k := min(n-len(conns), 500)
		if len(conns) == 0 {
			k = min(k, 50)
		} else if h.nofile > 0 {
			have := len(conns)
			procs := []struct {
				name      string
				pid, fds0 int
			}{{"harness", self, selfFds0}, {"proxy", childPid(v), childFds0}}
			for _, p := range procs {
				if p.pid == 0 {
					continue
				}
				per := float64(fdCount(p.pid)-p.fds0) / float64(have)
				if per <= 0 {
					continue
				}
				if room := int(float64(limit-p.fds0)/per) - have; room < k {
					k = max(room, 0)
					row.capped = fmt.Sprintf("RLIMIT_NOFILE %d allows about %d sessions (%.1f descriptors per session in the %s process)",
						h.nofile, have+k, per, p.name)
				}
			}
			if k == 0 {
				break
			}
		}
		cs, err := dialAll(v.url, k, 32)
		if err != nil {
			closeAll()
			return row, fmt.Errorf("after %d sessions: %w", len(conns), err)
		}
		conns = append(conns, cs...)
	}
	row.sessions = len(conns)
	// Settle: every session established on both sides and quiet.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var active int64 = int64(len(conns))
		if v.child != nil {
			st, err := v.child.call("stats")
			if err != nil {
				closeAll()
				return row, err
			}
			active = st.Active
		}
		if active == int64(len(conns)) && h.echo.active.Load() == int64(len(conns)) {
			break
		}
		if time.Now().After(deadline) {
			closeAll()
			return row, fmt.Errorf("sessions did not settle: %d proxied, %d at the upstream, %d clients", active, h.echo.active.Load(), len(conns))
		}
		time.Sleep(20 * time.Millisecond)
	}
	row.setup = time.Since(start)
	time.Sleep(300 * time.Millisecond)

	heap1, stack1 := heapAndStack()
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(len(conns)) }
	row.parentPer = per(heap1+stack1, heap0+stack0)
	row.slabPer = nan
	if slab1, ok := slabBytes(); ok && slabOK {
		row.slabPer = per(slab1, slab0)
	}
	row.childHeapPer, row.childStackPer, row.childRSSPer, row.goroutinesPer, row.childFdsPer = nan, nan, nan, nan, nan
	if v.child != nil {
		c1, err := v.child.call("memstats")
		if err != nil {
			closeAll()
			return row, err
		}
		row.childHeapPer = per(c1.HeapAlloc, c0.HeapAlloc)
		row.childStackPer = per(c1.StackInuse, c0.StackInuse)
		row.childRSSPer = per(c1.RSS, c0.RSS)
		row.goroutinesPer = float64(c1.Goroutines-c0.Goroutines) / float64(len(conns))
		row.childFdsPer = float64(fdCount(v.child.pid())-childFds0) / float64(len(conns))
		if prof := h.profilePath(workload{name: "idle"}, v, 0); prof != "" {
			if _, err := v.child.call("heap-profile " + strings.TrimSuffix(prof, "-r0.pprof") + "-heap.pprof"); err != nil {
				closeAll()
				return row, err
			}
		}
	}
	h.logf("idle %-8s %d sessions in %s: proxy %s heap + %s stack, %s RSS per session; harness %s per session",
		v.name, len(conns), row.setup.Round(time.Millisecond), fmtBytes(row.childHeapPer), fmtBytes(row.childStackPer), fmtBytes(row.childRSSPer), fmtBytes(row.parentPer))
	closeAll()
	return row, h.waitQuiet(v, 60*time.Second)
}

func childPid(v *variant) int {
	if v.child == nil {
		return 0
	}
	return v.child.pid()
}
