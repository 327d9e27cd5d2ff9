package main

import (
	"os"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// plug in Caddy modules here
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/wsgate/wsgate/caddymodule"
)

func main() {
	noteHTTP2(os.Args)
	caddycmd.Main()
}
