package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// figure is one number of a result that the summary tabulates.
type figure struct {
	name string
	get  func(r *Result) (float64, bool)
}

// figures are what each scenario is judged by (BENCHMARKS.md's tables).
var figures = map[string][]figure{
	"idle": {
		{"RSS KiB/client", fromServer(func(p *Proc) float64 { return p.RSSPerClientKiB })},
		{"connected", func(r *Result) (float64, bool) { return float64(r.Connected), true }},
	},
	"fanout": {
		{"CPU ms/1k deliveries", fromServer(func(p *Proc) float64 { return p.Per1000 })},
	},
	"peruser": {
		{"CPU ms/publication", fromServer(func(p *Proc) float64 { return p.PerPublication })},
		{"redis CPU ms/publication", func(r *Result) (float64, bool) {
			if r.Redis == nil {
				return 0, false
			}
			return r.Redis.PerPublication, true
		}},
	},
	"resume": {
		{"all missed p50 ms", fromResume(func(x *Resume) float64 { return x.All.P50 })},
		{"all missed max ms", fromResume(func(x *Resume) float64 { return x.All.Max })},
		{"CPU ms/resume", fromServer(func(p *Proc) float64 { return p.PerResume })},
	},
}

// deliveryFigures apply to every scenario that publishes live.
var deliveryFigures = []figure{
	{"p50 ms", fromLatency(func(l *Latency) float64 { return l.P50 })},
	{"p99 ms", fromLatency(func(l *Latency) float64 { return l.P99 })},
	{"p999 ms", fromLatency(func(l *Latency) float64 { return l.P999 })},
	{"server cores", fromServer(func(p *Proc) float64 { return p.CPUCores })},
	{"delivery faults", func(r *Result) (float64, bool) {
		if r.Deliveries == nil {
			return 0, false
		}
		return float64(r.Deliveries.faults()), true
	}},
}

func fromServer(f func(*Proc) float64) func(*Result) (float64, bool) {
	return func(r *Result) (float64, bool) {
		if r.Server == nil {
			return 0, false
		}
		return f(r.Server), true
	}
}

func fromLatency(f func(*Latency) float64) func(*Result) (float64, bool) {
	return func(r *Result) (float64, bool) {
		if r.Latency == nil {
			return 0, false
		}
		return f(r.Latency), true
	}
}

func fromResume(f func(*Resume) float64) func(*Result) (float64, bool) {
	return func(r *Result) (float64, bool) {
		if r.Resume == nil {
			return 0, false
		}
		return f(r.Resume), true
	}
}

// summarize reads every *.json result in dirs and prints, per scenario,
// a Markdown table with one row per label: the median of each figure
// over the runs, with the range when there were several.
func summarize(dirs []string, w io.Writer) error {
	type group struct {
		key     string // scenario, via and rate
		label   string
		results []*Result
		errors  int64
	}
	groups := map[string]*group{}
	var order []string
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.json"))
		if err != nil {
			return err
		}
		slices.Sort(files)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			var r Result
			if err := json.Unmarshal(b, &r); err != nil || r.Scenario == "" {
				continue // not a result
			}
			key := r.Scenario
			if r.Via != "" {
				key += " via " + r.Via
			}
			if r.Rate > 0 { // runs at other rates are other loads
				key += " at " + strconv.FormatFloat(r.Rate, 'f', -1, 64) + "/s"
			}
			id := key + "\x00" + r.Label
			g := groups[id]
			if g == nil {
				g = &group{key: key, label: r.Label}
				groups[id] = g
				order = append(order, id)
			}
			g.results = append(g.results, &r)
			g.errors += r.Errors.Total
		}
	}
	if len(order) == 0 {
		return fmt.Errorf("no results in %v", dirs)
	}
	slices.SortStableFunc(order, func(a, b string) int { return strings.Compare(groups[a].key, groups[b].key) })
	last := ""
	var figs []figure
	for _, id := range order {
		g := groups[id]
		if g.key != last {
			last = g.key
			scenario, _, _ := strings.Cut(g.key, " ")
			figs = figures[scenario]
			if scenario != "idle" && scenario != "resume" {
				figs = append(slices.Clone(figs), deliveryFigures...)
			}
			fmt.Fprintf(w, "\n%s\n\n| server | runs |", g.key)
			for _, f := range figs {
				fmt.Fprintf(w, " %s |", f.name)
			}
			fmt.Fprintf(w, " errors |\n|---|---|%s---|\n", strings.Repeat("---|", len(figs)))
		}
		fmt.Fprintf(w, "| %s | %d |", g.label, len(g.results))
		for _, f := range figs {
			var vals []float64
			for _, r := range g.results {
				if v, ok := f.get(r); ok {
					vals = append(vals, v)
				}
			}
			fmt.Fprintf(w, " %s |", medianRange(vals))
		}
		fmt.Fprintf(w, " %d |\n", g.errors)
	}
	return nil
}

// medianRange prints the median of vals, and their range when they differ.
func medianRange(vals []float64) string {
	if len(vals) == 0 {
		return "–"
	}
	slices.Sort(vals)
	m := vals[len(vals)/2]
	if len(vals)%2 == 0 {
		m = (vals[len(vals)/2-1] + vals[len(vals)/2]) / 2
	}
	if vals[0] == vals[len(vals)-1] {
		return num(m)
	}
	return fmt.Sprintf("%s (%s–%s)", num(m), num(vals[0]), num(vals[len(vals)-1]))
}

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}
