package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"time"

	"github.com/toygres/toygres/client"
	"github.com/toygres/toygres/duroxide"
)

// setting is one labelled value.
type setting struct {
	Key, Value string
}

type systemData struct {
	Counts    *counts
	Runtime   []setting // the runtime's real settings
	HasRT     bool
	Retry     retryView
	Config    []setting
	Retries   []client.ActivityRetries // activities with sequences or breakers
	RetriesAt time.Time
	HasRetry  bool // a report is available
	Process   []setting
	Generated time.Time
}

func (c *Console) handleSystem(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	d := systemData{Generated: time.Now().UTC()}
	var err error
	if d.Counts, err = c.counts(ctx); err != nil {
		c.internal(w, r, err)
		return
	}
	if rt := c.app.Runtime(); rt.Running() {
		d.HasRT = true
		d.Runtime = runtimeSettings(rt.Settings())
	}
	d.Retry = c.retries.view(time.Now())
	if c.opts.Retries != nil {
		if rep := c.opts.Retries(ctx); rep != nil {
			d.HasRetry, d.RetriesAt = true, rep.GeneratedAt
			for _, a := range rep.Activities {
				if a.Sequences > 0 || len(a.Circuits) > 0 {
					d.Retries = append(d.Retries, a)
				}
			}
		}
	}
	if !isLive(r) && c.opts.Config != nil {
		d.Config = flatten(c.opts.Config(ctx))
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	d.Process = []setting{
		{"Go version", runtime.Version()},
		{"goroutines", fmt.Sprint(runtime.NumGoroutine())},
		{"heap in use", fmt.Sprintf("%.1f MiB", float64(ms.HeapInuse)/(1<<20))},
		{"CPUs", fmt.Sprint(runtime.NumCPU())},
		{"console up", fmtDur(time.Since(c.started))},
	}
	c.render(w, r, http.StatusOK, "system", "System", "system", d)
}

func runtimeSettings(o duroxide.Options) []setting {
	return []setting{
		{"worker id", o.WorkerID},
		{"orchestration dispatchers", fmt.Sprint(o.OrchestrationConcurrency)},
		{"activity workers", fmt.Sprint(o.ActivityConcurrency)},
		{"orchestration lock timeout", o.OrchestrationLockTimeout.String()},
		{"activity lock timeout", o.ActivityLockTimeout.String()},
		{"poll interval (fallback)", o.PollInterval.String()},
		{"max attempts per message", fmt.Sprint(o.MaxAttempts)},
		{"cancellation grace period", o.CancellationGracePeriod.String()},
		{"instance cache size", fmt.Sprint(o.CacheSize)},
	}
}

// flatten lists a struct's exported fields by their JSON names, in
// declaration order (the API's ServerConfig).
func flatten(v any) []setting {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil
		}
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		b, _ := json.Marshal(v)
		return []setting{{"config", string(b)}}
	}
	var out []setting
	rt := rv.Type()
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || name == "retry" || name == "circuit_breaker" {
			continue // retry policies and breakers have their own panel
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, setting{strings.ReplaceAll(name, "_", " "), formatValue(rv.Field(i))})
	}
	return out
}

func formatValue(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case string:
		if x == "" {
			return "–"
		}
		return x
	case time.Time:
		return fmtTime(x, "2006-01-02 15:04:05")
	case []string:
		if len(x) == 0 {
			return "–"
		}
		return strings.Join(x, ", ")
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v.Interface())
}
