package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
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
	syscallsPerMsg float64 // proxy read/write system calls per forwarded message (splice, recv, send not counted)
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
		out += fmt.Sprintf("  proxy %6.2f µs/msg", s.cpuPerMsg)
	}
	if !math.IsNaN(s.allocsPerFrame) {
		out += fmt.Sprintf(" %5.2f rw-syscalls/msg %5.2f allocs/frame", s.syscallsPerMsg, s.allocsPerFrame)
	}
	return out + fmt.Sprintf("  busy %3.0f%% other %3.0f%%", 100*s.busy, 100*s.other)
}

var nan = math.NaN()

// runTimed runs a timed workload -rounds times against every variant,
// interleaved: A B C, A B C, ...
func (h *harness) runTimed(w workload) (workloadResult, error) {
	res := workloadResult{w: w, samples: map[string][]sample{}}
	for r := 1; r <= h.opts.rounds; r++ {
		for _, v := range h.variants {
			s, err := h.measure(w, v, r)
			if err != nil {
				return res, fmt.Errorf("%s, round %d: %w%s", v.name, r, err, v.proc.logTail())
			}
			res.samples[v.name] = append(res.samples[v.name], s)
			h.done++
			h.logf("[%d/%d] %-16s round %d %-12s %s", h.done, h.total, w.name, r, v.name, s.brief())
		}
	}
	return res, nil
}

// measure runs one timed measurement of w through v.
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
		if _, err := v.proc.ctl.call("profile-start " + prof); err != nil {
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
		_, err = v.proc.ctl.call("profile-stop")
	}
	return
}

// fill computes the proxy-side figures of s from the interval's counters:
// none for direct; for a proxy without a Go runtime (nginx), no allocations
// and no system calls (it uses recv and send, which /proc/PID/io does not count).
func (s *sample) fill(s0, s1 snapshot, forwardedMsgs, forwardedFrames int64) {
	all := s1.t.Sub(s0.t).Seconds()
	cpu := s1.proxyCPU - s0.proxyCPU
	ours := s1.selfCPU - s0.selfCPU + cpu
	s.busy = ours.Seconds() / (all * float64(runtime.NumCPU()))
	s.other = max(0, (s1.machine-s0.machine-ours).Seconds()/(all*float64(runtime.NumCPU())))
	s.cpuPerMsg, s.syscallsPerMsg, s.allocsPerFrame, s.bytesPerFrame = nan, nan, nan, nan
	if !s0.proxy || forwardedMsgs == 0 {
		return
	}
	s.cpuPerMsg = float64(cpu.Microseconds()) / float64(forwardedMsgs)
	if s0.goRuntime { // nginx's recv and send are not counted in /proc/PID/io
		s.syscallsPerMsg = float64(s1.syscalls-s0.syscalls) / float64(forwardedMsgs)
		s.allocsPerFrame = float64(s1.mallocs-s0.mallocs) / float64(forwardedFrames)
		s.bytesPerFrame = float64(s1.bytes-s0.bytes) / float64(forwardedFrames)
	}
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
	s := sample{msgsPerSec: float64(n) / wall.Seconds(), p50: percentile(lat, 50), p99: percentile(lat, 99)}
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
		sendClose(c, deadline)
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

// percentile is the q-th percentile (0 < q ≤ 100) of sorted latencies, in µs;
// NaN if there are none.
func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return nan
	}
	i := min(int(float64(len(sorted))*q/100), len(sorted)-1)
	return float64(sorted[i].Nanoseconds()) / 1e3
}
