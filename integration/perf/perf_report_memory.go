package main

import (
	"math"
	"strings"
	"time"
)

// Targets users compare the mass-close figures with.
const (
	targetRSSGrowth = 2 << 20               // proxy RSS growth during the storm, bytes
	targetProbeP99  = 50 * time.Millisecond // probe echo p99 during the storm
)

// writeIdle writes the memory-per-idle-session table, one group of rows per
// idle workload.
func (r *report) writeIdle(p printer) {
	p("## Memory per idle session (-idle %d sessions asked)\n\n", r.opts.idle)
	p("| workload | variant | sessions | proxy heap/session | proxy stacks/session | proxy heap+stack/session | whole system − direct | proxy kernel (slab)/session | proxy heap+stack+kernel | **proxy RSS/session** (as is) | proxy RSS/session (after GC) | goroutines/session | proxy fds/session | harness heap+stack/session | setup |\n")
	p("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, row := range r.idle {
		both := row.childHeapPer + row.childStackPer
		p("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", row.workload, r.label(row.variant), row.sessions,
			fmtBytes(row.childHeapPer), fmtBytes(row.childStackPer), fmtBytes(both), fmtBytes(row.wholePer),
			fmtBytes(row.kernelPer), fmtBytes(both+row.kernelPer),
			fmtBytes(row.rssPer), fmtBytes(row.rssGCPer), fmtFloat(row.goroutinesPer, 2), fmtFloat(row.childFdsPer, 2), fmtBytes(row.parentPer),
			row.setup.Round(time.Millisecond))
	}
	p("\nWorkloads: **idle** = sessions opened (client → proxy → upstream, both legs) and left idle, nothing sent; " +
		"**idle-after-SIZE** = each session first exchanges one SIZE-byte message (sent and echoed), then idles: what a proxy keeps of a session once it has been used.\n\n")
	p("Method: for each variant in turn, a proxy process is started afresh (so earlier workloads have not grown it), the sessions are opened, and once every session is established at the proxy and the upstream (and has exchanged its message) " +
		"the memory is read and compared with the same figures read before the sessions were opened; the growth divided by the sessions is the cost per session.\n\n")
	p("- **proxy RSS/session (as is)**: growth of the proxy's resident memory (VmRSS of /proc/PID/status; nginx: master + worker summed), read first, with nothing forced: what an operator sees. " +
		"It counts whole pages the process touched, including freed memory the Go runtime has not returned yet.\n")
	p("- **proxy RSS/session (after GC)**: the same read right after the Go child ran two GCs and debug.FreeOSMemory (– for nginx, which has no GC to force).\n")
	p("- **proxy heap/stacks/heap+stack**: the Go child's live heap (MemStats.HeapAlloc) and goroutine stacks (MemStats.StackInuse) after those GCs: the proxy's own cost, both legs together.\n")
	p("- **whole system − direct**: (harness growth + child heap+stack growth) per session through the proxy minus the harness growth per session of **direct** (clients and upstream only): the same cost measured as the whole system's growth; the two agree when the harness's own memory is the same in every variant.\n")
	p("- **proxy kernel (slab)/session**: growth of the kernel's slab memory (/proc/slabinfo: active objects × object size, system-wide; needs root) per session, minus the same growth of **direct**: " +
		"the proxy's sockets, epoll entries and (tcp variant) splice pipe rings; – where /proc/slabinfo cannot be read.\n")
	p("- **goroutines**, **fds**: the proxy's goroutines and descriptors per session; **harness**: the clients' and upstream's heap+stack per session; **setup**: time to open (and use) the sessions.\n\n")
	for _, row := range r.idle {
		if row.capped != "" {
			p("- %s, %s: fewer sessions than asked: %s.\n", row.workload, row.variant, row.capped)
		}
	}
	p("\n")
}

// writeMass writes the mass-close table.
func (r *report) writeMass(p printer) {
	p("## Mass close (-mass-close %d sessions asked)\n\n", r.opts.massClose)
	p("| workload | variant | sessions | all gone after | proxy RSS before (anon) | **RSS peak − before** (5 ms samples) | VmHWM − before | RSS after − before | probe echoes | probe p50 before | probe p50 | **probe p99** | probe max | targets |\n")
	p("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, row := range r.mass {
		p("| %s | %s | %d | %s | %s (%s) | %s | %s | %s | %d | %s | %s | %s | %s | %s |\n", row.workload, r.label(row.variant), row.sessions,
			row.closing.Round(time.Millisecond), fmtBytes(row.rssBefore), fmtBytes(row.anonBefore), fmtBytes(row.peakGrowth), fmtBytes(row.hwmGrowth), fmtBytes(row.afterGrowth),
			row.probes, fmtMicros(row.calmP50), fmtMicros(row.p50), fmtMicros(row.p99), fmtMicros(row.max), row.verdict())
	}
	p("\nWorkloads: **mass-close** = the sessions are opened and settle, then %d goroutines released by one barrier send a close frame on every session (then each waits for the peer's close); "+
		"**mass-drop** = the same, but the clients close their TCP connections without a close frame. Meanwhile one more session, the probe, echoes a %d-byte message every %s through the same proxy.\n\n",
		stormWorkers, probeSize, probeEvery)
	p("- **all gone after**: from the barrier until no session but the probe is left at the proxy (its own count; Caddy and nginx: half its descriptors opened since it started) and at the upstream. The storm window is that long, at least %s.\n", minWindow)
	p("- **proxy RSS before**: VmRSS (nginx: master + worker) just before the barrier, nothing forced; in parentheses its anonymous part (RssAnon): "+
		"the rest is the executable's mapped pages, large for the Go children since their one binary links Caddy and its standard modules. **RSS peak − before**: the highest VmRSS sampled every %s during the window, minus that; "+
		"**VmHWM − before**: the kernel's peak RSS, reset (/proc/PID/clear_refs) just before the barrier, read after the window, minus that — no sampling gap (nginx: the processes' peaks summed, an upper bound); "+
		"**RSS after − before**: at the end of the window.\n", rssEvery)
	p("- **probe**: the echoes in flight at some moment of the window and their round trip (p50, p99, max); **probe p50 before**: echoes sent and back within the %s before the barrier, for reference. "+
		"A probe session that failed is named under the table. "+
		"The harness (clients and upstream, one process) shares the cores with the proxy and has the storm's closes to process too, so the probe waits for it as well: **direct**'s row, with no proxy at all, is the floor the others compare with.\n", calmWindow)
	p("- **targets**: ✓ when the RSS growth (the larger of the sampled peak and VmHWM) is at most %s and the probe's p99 is under %s.\n\n", fmtBytes(targetRSSGrowth), targetProbeP99)
	for _, row := range r.mass {
		if row.capped != "" {
			p("- %s, %s: fewer sessions than asked: %s.\n", row.workload, row.variant, row.capped)
		}
		if row.probeErr != "" {
			p("- %s, %s: the probe session failed: %s.\n", row.workload, row.variant, row.probeErr)
		}
	}
	p("\n")
}

// verdict compares the row with the targets: ✓, or what missed them.
func (row massRow) verdict() string {
	var miss []string
	growth := row.peakGrowth // NaN for direct: no proxy, no RSS target
	if !math.IsNaN(row.hwmGrowth) {
		growth = math.Max(growth, row.hwmGrowth)
	}
	if growth > targetRSSGrowth {
		miss = append(miss, "RSS")
	}
	if math.IsNaN(row.p99) || row.p99 >= float64(targetProbeP99.Microseconds()) || row.probeErr != "" {
		miss = append(miss, "p99")
	}
	if len(miss) == 0 {
		return "✓"
	}
	return "✗ " + strings.Join(miss, ", ")
}
