package proxy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// policyArgs are the names ParseBalancer accepts, as in Caddy's lb_policy,
// with the arguments each takes: at least min, at most max.
var policyArgs = map[string]struct{ min, max int }{
	"random": {}, "random_choose": {0, 1}, "round_robin": {}, "least_conn": {}, "first": {},
	"ip_hash": {}, "client_ip_hash": {}, "uri_hash": {}, "query": {1, 1}, "header": {1, 1}, "cookie": {0, 2},
}

// ParseBalancer builds a Balancer from a Caddy lb_policy name and its
// arguments: random_choose [n] (default 2), query <key>, header <field>,
// cookie [<name> [<secret>]]; the others take none. client_ip_hash is ip_hash
// (behind chi's RealIP, RemoteAddr is the client's IP). "" is random, Caddy's default.
func ParseBalancer(policy string, args ...string) (Balancer, error) {
	if policy == "" {
		policy = "random"
	}
	n, ok := policyArgs[policy]
	if !ok {
		names := make([]string, 0, len(policyArgs))
		for k := range policyArgs {
			names = append(names, k)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("proxy: unknown lb policy %q (valid: %s)", policy, strings.Join(names, ", "))
	}
	if len(args) < n.min || len(args) > n.max {
		return nil, fmt.Errorf("proxy: lb policy %q takes %d to %d arguments, got %d", policy, n.min, n.max, len(args))
	}
	if slices.Contains(args, "") {
		return nil, fmt.Errorf("proxy: lb policy %s: empty argument", policy)
	}
	return newPolicy(policy, args)
}

// newPolicy builds policy from arguments ParseBalancer checked.
func newPolicy(policy string, args []string) (Balancer, error) {
	switch policy {
	case "random_choose":
		n := 2
		if len(args) == 1 {
			var err error
			if n, err = strconv.Atoi(args[0]); err != nil || n < 2 {
				return nil, fmt.Errorf("proxy: lb policy random_choose: choose must be an integer >= 2, got %q", args[0])
			}
		}
		return RandomChoose(n), nil
	case "round_robin":
		return RoundRobin(), nil
	case "least_conn":
		return LeastConn(), nil
	case "first":
		return First(), nil
	case "ip_hash", "client_ip_hash":
		return IPHash(), nil
	case "uri_hash":
		return URIHash(), nil
	case "query":
		return QueryHash(args[0]), nil
	case "header":
		return HeaderHash(args[0]), nil
	case "cookie":
		c := &StickyCookie{}
		if len(args) > 0 {
			c.Name = args[0]
		}
		if len(args) > 1 {
			c.Secret = args[1]
		}
		return c, nil
	}
	return Random(), nil
}
