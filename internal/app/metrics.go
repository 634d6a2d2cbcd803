package app

import (
	"context"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/toygres/toygres/internal/cms"
)

// instanceGauges exports toygres_instances{state} and
// toygres_instances_health{health} from the CMS at scrape time.
type instanceGauges struct {
	cms    cms.Store
	state  *prometheus.Desc
	health *prometheus.Desc

	mu     sync.Mutex
	last   time.Time
	cached *cms.Counts
}

func newInstanceGauges(c cms.Store) *instanceGauges {
	return &instanceGauges{
		cms:    c,
		state:  prometheus.NewDesc("toygres_instances", "Instances by state.", []string{"state"}, nil),
		health: prometheus.NewDesc("toygres_instances_health", "Running instances by health.", []string{"health"}, nil),
	}
}

func (g *instanceGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.state
	ch <- g.health
}

func (g *instanceGauges) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	if g.cached == nil || time.Since(g.last) > time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := g.cms.Counts(ctx)
		cancel()
		if err == nil {
			g.cached, g.last = c, time.Now()
		}
	}
	c := g.cached
	g.mu.Unlock()
	if c == nil {
		return
	}
	for _, s := range []cms.State{cms.StateCreating, cms.StateRunning, cms.StateFailed, cms.StateDeleting, cms.StateDeleted} {
		ch <- prometheus.MustNewConstMetric(g.state, prometheus.GaugeValue, float64(c.ByState[s]), string(s))
	}
	for _, h := range []cms.Health{cms.HealthHealthy, cms.HealthUnhealthy, cms.HealthUnknown} {
		ch <- prometheus.MustNewConstMetric(g.health, prometheus.GaugeValue, float64(c.ByHealth[h]), string(h))
	}
}

// withPassword inserts a password into a postgresql:// URL.
func withPassword(conn, password string) (string, error) {
	u, err := url.Parse(conn)
	if err != nil {
		return "", err
	}
	user := "postgres"
	if u.User != nil && u.User.Username() != "" {
		user = u.User.Username()
	}
	u.User = url.UserPassword(user, password)
	return u.String(), nil
}
