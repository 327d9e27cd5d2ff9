package integration

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// startChromium starts a headless Chromium with its profile in dir, kept off
// the network (closed here), with extra options appended; the returned context
// drives it for at most 45 s, and cancel closes the browser.
func startChromium(dir string, extra ...chromedp.ExecAllocatorOption) (context.Context, context.CancelFunc) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(dir),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	actx, acancel := chromedp.NewExecAllocator(ctx, append(opts, extra...)...)
	bctx, bcancel := chromedp.NewContext(actx)
	return bctx, func() { bcancel(); acancel(); cancel() }
}

// pageDriver runs steps on a page and fails the test when one fails.
type pageDriver struct {
	t   *testing.T
	ctx context.Context
}

// run performs steps, failing the test with what they were for.
func (d pageDriver) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	d.t.Helper()
	if err := chromedp.Do(d.ctx, steps...); err != nil {
		d.t.Fatalf("%s: %v", what, err)
	}
}

// poll waits until the JavaScript expression expr is truthy.
func (d pageDriver) poll(what, expr string) {
	d.t.Helper()
	d.run(what, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(waitTimeout), chromedp.WithPollingInterval(20*time.Millisecond)))
}

// closed waits for the demo page's WebSocket to close and returns how it did.
func (d pageDriver) closed() pageClosed {
	d.t.Helper()
	c, err := chromedp.Run(d.ctx, chromedp.Poll[pageClosed](`window.wsgate.closed`,
		chromedp.WithPollingTimeout(waitTimeout), chromedp.WithPollingInterval(20*time.Millisecond)))
	if err != nil {
		d.t.Fatalf("waiting for onclose: %v", err)
	}
	return c
}
