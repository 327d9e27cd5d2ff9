package main

import (
	"crypto/tls"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Mass close: how a proxy copes when all its sessions end at the same moment.
const (
	stormWorkers = 8                      // goroutines that close the sessions, released by one barrier
	probeEvery   = 5 * time.Millisecond   // pause between two echoes of the probe session
	probeSize    = 128                    // the probe's message
	rssEvery     = 5 * time.Millisecond   // RSS sampling period during the storm
	calmWindow   = 300 * time.Millisecond // probe echoes before the storm, for reference
	minWindow    = 250 * time.Millisecond // the storm window lasts at least this long
)

// massRow is what one variant did when its sessions were all closed at once.
type massRow struct {
	workload string
	variant  string
	sessions int
	capped   string        // why fewer sessions than asked, if so
	closing  time.Duration // from the barrier until no session but the probe was left at the proxy and the upstream

	rssBefore   float64 // proxy RSS (bytes) just before the barrier; NaN for direct
	anonBefore  float64 // the anonymous part of it (RssAnon): without the binary's mapped pages
	peakGrowth  float64 // highest RSS sampled every rssEvery during the window, minus rssBefore
	hwmGrowth   float64 // VmHWM reset just before the barrier, read after the window, minus rssBefore
	afterGrowth float64 // RSS at the end of the window minus rssBefore
	rssSamples  int

	probes        int     // probe echoes in flight at some time during the window
	calmP50       float64 // µs, probe echoes sent and back in the calmWindow before the barrier
	p50, p99, max float64 // µs, probe echoes in the window
	probeErr      string  // the probe session failed
}

// runMassClose runs a mass close through each variant in turn, each through
// a proxy process started afresh.
func (h *harness) runMassClose(w workload) ([]massRow, error) {
	var rows []massRow
	for _, v := range h.variants {
		if err := h.restart(v); err != nil {
			return nil, err
		}
		row, err := h.massOne(w, v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w%s", v.name, err, v.proc.logTail())
		}
		h.logf("%s %-12s %d sessions closed in %s: RSS +%s peak (sampled), +%s VmHWM; probe %d echoes p50 %s p99 %s max %s %s",
			w.name, v.name, row.sessions, row.closing.Round(time.Millisecond), fmtBytes(row.peakGrowth), fmtBytes(row.hwmGrowth),
			row.probes, fmtMicros(row.p50), fmtMicros(row.p99), fmtMicros(row.max), row.probeErr)
		rows = append(rows, row)
	}
	return rows, nil
}

// massOne opens -mass-close sessions and a probe session through v, then
// closes all but the probe at once, watching the proxy's RSS and the probe's
// echo latency until every closed session is gone.
func (h *harness) massOne(w workload, v *variant) (massRow, error) {
	row := massRow{workload: w.name, variant: v.name}
	if err := h.waitQuiet(v, 10*time.Second); err != nil {
		return row, err
	}
	pc, err := dialAll(v.url, 1, 1)
	if err != nil {
		return row, fmt.Errorf("probe: %w", err)
	}
	conns, capped, err := h.openSessions(v, h.opts.massClose)
	if err != nil {
		pc[0].Close()
		return row, err
	}
	row.sessions, row.capped = len(conns), capped
	if err := h.waitSessions(v, int64(len(conns)+1), 60*time.Second); err != nil {
		closeAll(append(conns, pc[0]))
		return row, fmt.Errorf("sessions did not settle: %w", err)
	}
	pr := startProbe(pc[0])
	time.Sleep(calmWindow)

	var sampler *rssSampler
	row.rssBefore, row.anonBefore, row.peakGrowth, row.hwmGrowth, row.afterGrowth = nan, nan, nan, nan, nan
	hwmOK := false
	if p := v.proc; p != nil {
		hwmOK = p.resetPeak()
		row.rssBefore, row.anonBefore = float64(p.rss()), float64(p.statusSum("RssAnon"))
		sampler = startRSSSampler(p)
	}
	released, done := closeStorm(conns, w.drop)
	gone, err := h.waitStormEnd(v, done, 60*time.Second)
	if err != nil {
		pr.end()
		return row, err
	}
	row.closing = gone.Sub(released)
	end := released.Add(max(row.closing, minWindow))
	time.Sleep(time.Until(end))
	if sampler != nil {
		peak, n := sampler.end()
		row.peakGrowth, row.rssSamples = float64(peak)-row.rssBefore, n
		row.afterGrowth = float64(v.proc.rss()) - row.rssBefore
		if hwmOK {
			row.hwmGrowth = float64(v.proc.statusSum("VmHWM")) - row.rssBefore
		}
	}
	if err := pr.end(); err != nil {
		row.probeErr = err.Error()
	}
	row.calmP50 = percentile(pr.echoes(func(sent, back time.Time) bool {
		return !sent.Before(released.Add(-calmWindow)) && !back.After(released)
	}), 50)
	lat := pr.echoes(func(sent, back time.Time) bool { return sent.Before(end) && back.After(released) })
	row.probes = len(lat)
	row.p50, row.p99, row.max = percentile(lat, 50), percentile(lat, 99), percentile(lat, 100)
	return row, h.waitQuiet(v, 30*time.Second)
}

// waitStormEnd waits until the storm's goroutines are done and only the probe
// session is left at the proxy and the upstream, and returns that moment.
func (h *harness) waitStormEnd(v *variant, done <-chan struct{}, limit time.Duration) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-done:
			proxied, up, err := h.sessions(v)
			if err != nil {
				return time.Time{}, err
			}
			if proxied <= 1 && up <= 1 {
				return time.Now(), nil
			}
			if time.Now().After(deadline) {
				return time.Time{}, fmt.Errorf("%d proxy and %d upstream sessions still open %s after the mass close", proxied, up, limit)
			}
		case <-time.After(time.Until(deadline)):
			return time.Time{}, fmt.Errorf("the clients' closes did not finish within %s", limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// closeStorm closes every conn at once: stormWorkers goroutines, released by
// one barrier, send a close frame on each of their share and then read until
// the peer's close (or, with drop, close their TCP connections without a
// close frame). It returns the moment of the release and a channel closed
// when every goroutine is done.
func closeStorm(conns []*websocket.Conn, drop bool) (released time.Time, done <-chan struct{}) {
	gate, fin := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	for i := range stormWorkers {
		share := conns[i*len(conns)/stormWorkers : (i+1)*len(conns)/stormWorkers]
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			closeShare(share, drop)
		}()
	}
	go func() {
		wg.Wait()
		close(fin)
	}()
	released = time.Now()
	close(gate)
	return released, fin
}

// closeShare closes one storm goroutine's sessions: all close frames first,
// then the wait for each peer's close.
func closeShare(share []*websocket.Conn, drop bool) {
	if drop {
		for _, c := range share {
			dropTCP(c)
		}
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range share {
		sendClose(c, deadline)
	}
	for _, c := range share {
		awaitClose(c, deadline)
	}
}

// dropTCP closes c's TCP connection, without a close frame (and without a
// TLS close_notify under -tls).
func dropTCP(c *websocket.Conn) {
	nc := c.NetConn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	nc.Close()
}

// probe is a session that echoes a probeSize message every probeEvery,
// timing each echo, while the other sessions are closed around it.
type probe struct {
	c      *websocket.Conn
	stop   chan struct{}
	done   chan struct{}
	starts []time.Time     // when each echo was sent
	lats   []time.Duration // how long it took to come back
	err    error
}

// startProbe starts echoing on c.
func startProbe(c *websocket.Conn) *probe {
	p := &probe{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

// run echoes until stopped or until the session fails.
func (p *probe) run() {
	defer close(p.done)
	msg := make([]byte, probeSize)
	pause := time.NewTimer(probeEvery)
	defer pause.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-pause.C:
		}
		t0 := time.Now()
		if err := echoOne(p.c, msg); err != nil {
			p.err = fmt.Errorf("probe session: %w", err)
			return
		}
		p.starts, p.lats = append(p.starts, t0), append(p.lats, time.Since(t0))
		pause.Reset(probeEvery)
	}
}

// end stops the probe and closes its session; the error is the probe's.
func (p *probe) end() error {
	close(p.stop)
	<-p.done
	if p.err != nil {
		p.c.Close()
		return p.err
	}
	closeGracefully(p.c)
	return nil
}

// echoes returns, sorted, the latencies of the echoes for which keep(sent,
// back) holds, given when each was sent and when it came back.
func (p *probe) echoes(keep func(sent, back time.Time) bool) []time.Duration {
	var out []time.Duration
	for i, t := range p.starts {
		if keep(t, t.Add(p.lats[i])) {
			out = append(out, p.lats[i])
		}
	}
	slices.Sort(out)
	return out
}

// rssSampler reads a proxy's RSS every rssEvery until stopped, keeping the peak.
type rssSampler struct {
	stop, done chan struct{}
	peak       uint64
	n          int
}

// startRSSSampler starts sampling p's RSS.
func startRSSSampler(p *proxyProc) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(rssEvery)
		defer tick.Stop()
		for {
			s.peak, s.n = max(s.peak, p.rss()), s.n+1
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// end stops the sampler and returns the peak RSS and the number of samples.
func (s *rssSampler) end() (peak uint64, n int) {
	close(s.stop)
	<-s.done
	return s.peak, s.n
}
