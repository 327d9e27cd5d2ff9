package main

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// idleRow is the memory held by idle sessions through one variant.
type idleRow struct {
	workload string
	variant  string
	sessions int
	capped   string // why fewer sessions than asked, if so
	setup    time.Duration

	parentPer     float64 // this process (clients + upstream): heap+stack growth per session
	childHeapPer  float64 // proxy child: live heap growth per session
	childStackPer float64 // proxy child: goroutine stack growth per session
	rssPer        float64 // proxy: RSS growth per session, nothing forced
	rssGCPer      float64 // proxy child: RSS growth per session, read right after GC + FreeOSMemory
	goroutinesPer float64 // proxy child: goroutines per session
	childFdsPer   float64 // proxy: descriptors per session
	wholePer      float64 // (parent + child growth) per session, minus direct's parent growth per session
	slabPer       float64 // kernel slab growth per session, system-wide (NaN where unreadable)
	kernelPer     float64 // slabPer minus direct's: the proxy's kernel memory per session
}

// memPoint is the memory of the harness and of a variant's proxy at one moment.
type memPoint struct {
	selfHeapStack uint64 // this process's live heap + stacks after GC
	rss           uint64 // the proxy's VmRSS (summed over its processes), read first, nothing forced
	rssGC         uint64 // the same right after the Go child's GCs and FreeOSMemory
	heap, stack   uint64 // the Go child's live heap and stacks
	goroutines    int
	fds           int
	slab          uint64
	slabOK        bool
}

// memPoint reads the memory figures: the proxy's RSS as it is first, then
// (Go children) after the child's GCs, then the harness's and the kernel's.
func (h *harness) memPoint(v *variant) (memPoint, error) {
	var m memPoint
	if p := v.proc; p != nil {
		m.rss, m.fds = p.rss(), p.fds()
		if p.ctl != nil {
			st, err := p.ctl.call("memstats")
			if err != nil {
				return m, err
			}
			m.heap, m.stack, m.goroutines = st.HeapAlloc, st.StackInuse, st.Goroutines
			m.rssGC = p.rss()
		}
	}
	heap, stack := heapAndStack()
	m.selfHeapStack = heap + stack
	m.slab, m.slabOK = slabBytes()
	return m, nil
}

// runIdle measures the memory idle sessions hold through each variant in
// turn, each through a proxy process started afresh.
func (h *harness) runIdle(w workload) ([]idleRow, error) {
	var rows []idleRow
	directParent, directSlab := nan, nan
	for _, v := range h.variants {
		if err := h.restart(v); err != nil {
			return nil, err
		}
		row, err := h.idleOne(w, v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w%s", v.name, err, v.proc.logTail())
		}
		if v.name == "direct" {
			directParent, directSlab = row.parentPer, row.slabPer
		}
		rows = append(rows, row)
	}
	for i := range rows {
		r := &rows[i]
		if r.variant == "direct" {
			r.wholePer, r.kernelPer = 0, 0
		} else {
			r.wholePer = r.parentPer + r.childHeapPer + r.childStackPer - directParent
			r.kernelPer = r.slabPer - directSlab
		}
	}
	return rows, nil
}

// idleOne opens -idle sessions through v (each exchanging one w.size message
// first, if w.size > 0), lets them settle, and measures what they hold.
func (h *harness) idleOne(w workload, v *variant) (idleRow, error) {
	row := idleRow{workload: w.name, variant: v.name}
	if err := h.waitQuiet(v, 10*time.Second); err != nil {
		return row, err
	}
	m0, err := h.memPoint(v)
	if err != nil {
		return row, err
	}
	start := time.Now()
	conns, capped, err := h.openSessions(v, h.opts.idle)
	if err != nil {
		return row, err
	}
	defer closeAll(conns)
	row.sessions, row.capped = len(conns), capped
	if err := h.waitSessions(v, int64(len(conns)), 30*time.Second); err != nil {
		return row, fmt.Errorf("sessions did not settle: %w", err)
	}
	if w.size > 0 {
		if err := echoOnce(conns, w.size); err != nil {
			return row, err
		}
	}
	row.setup = time.Since(start)
	time.Sleep(300 * time.Millisecond)
	m1, err := h.memPoint(v)
	if err != nil {
		return row, err
	}
	row.fill(m0, m1, v.proc)
	if prof := h.profilePath(w, v, 0); prof != "" {
		if _, err := v.proc.ctl.call("heap-profile " + strings.TrimSuffix(prof, "-r0.pprof") + "-heap.pprof"); err != nil {
			return row, err
		}
	}
	h.logf("%s %-12s %d sessions in %s: proxy %s heap + %s stack, RSS %s as is, %s after GC per session; harness %s per session",
		w.name, v.name, len(conns), row.setup.Round(time.Millisecond), fmtBytes(row.childHeapPer), fmtBytes(row.childStackPer),
		fmtBytes(row.rssPer), fmtBytes(row.rssGCPer), fmtBytes(row.parentPer))
	closeAll(conns)
	return row, h.waitQuiet(v, 60*time.Second)
}

// fill computes the per-session figures from the memory before and after
// the sessions were opened; p is the variant's proxy (nil for direct).
func (r *idleRow) fill(m0, m1 memPoint, p *proxyProc) {
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(r.sessions) }
	r.parentPer = per(m1.selfHeapStack, m0.selfHeapStack)
	r.slabPer = nan
	if m0.slabOK && m1.slabOK {
		r.slabPer = per(m1.slab, m0.slab)
	}
	r.childHeapPer, r.childStackPer, r.rssPer, r.rssGCPer, r.goroutinesPer, r.childFdsPer = nan, nan, nan, nan, nan, nan
	if p == nil {
		return
	}
	r.rssPer = per(m1.rss, m0.rss)
	r.childFdsPer = float64(m1.fds-m0.fds) / float64(r.sessions)
	if p.ctl != nil {
		r.childHeapPer, r.childStackPer = per(m1.heap, m0.heap), per(m1.stack, m0.stack)
		r.rssGCPer = per(m1.rssGC, m0.rssGC)
		r.goroutinesPer = float64(m1.goroutines-m0.goroutines) / float64(r.sessions)
	}
}

// fdCounter counts the descriptors of one process that holds session ends.
type fdCounter struct {
	name  string
	count func() int
	fds0  int
}

// openSessions opens up to n sessions through v in batches, keeping the
// harness's and the proxy's descriptors within RLIMIT_NOFILE (descriptors
// per session are measured on the first batch); capped says why fewer
// sessions were opened, if so.
func (h *harness) openSessions(v *variant, n int) (conns []*websocket.Conn, capped string, err error) {
	counters := []fdCounter{{name: "harness", count: func() int { return fdCount(os.Getpid()) }}}
	if v.proc != nil {
		counters = append(counters, fdCounter{name: "proxy", count: v.proc.fds})
	}
	for i := range counters {
		counters[i].fds0 = counters[i].count()
	}
	for len(conns) < n {
		k := min(n-len(conns), 500)
		if len(conns) == 0 {
			k = min(k, 50)
		} else if room, why := h.fdRoom(counters, len(conns)); room < k {
			k, capped = room, why
		}
		if k == 0 {
			break
		}
		cs, err := dialAll(v.url, k, 32)
		if err != nil {
			closeAll(conns)
			return nil, "", fmt.Errorf("after %d sessions: %w", len(conns), err)
		}
		conns = append(conns, cs...)
	}
	return conns, capped, nil
}

// fdRoom is how many more sessions the descriptor limit leaves room for, with
// have sessions open, and which process limits it.
func (h *harness) fdRoom(counters []fdCounter, have int) (room int, why string) {
	room = math.MaxInt
	if h.nofile == 0 {
		return room, ""
	}
	const margin = 256
	limit := int(h.nofile) - margin
	for _, c := range counters {
		per := float64(c.count()-c.fds0) / float64(have)
		if per <= 0 {
			continue
		}
		if r := max(int(float64(limit-c.fds0)/per)-have, 0); r < room {
			room = r
			why = fmt.Sprintf("RLIMIT_NOFILE %d allows about %d sessions (%.1f descriptors per session in the %s process)",
				h.nofile, have+r, per, c.name)
		}
	}
	return room, why
}

// echoOnce has every session send one size-byte message and read its echo,
// 32 sessions at a time.
func echoOnce(conns []*websocket.Conn, size int) error {
	payload := make([]byte, size)
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := echoOne(c, payload); err != nil {
				mu.Lock()
				first = cmp.Or(first, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}
