package main

import "time"

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
