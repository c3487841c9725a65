package heraldtest

import (
	"bufio"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Metrics is one scrape of a node's GET /metrics: each series, written as
// its name and its labels sorted (name{a="x",b="y"}), and its value.
type Metrics map[string]float64

// Get returns the value of the series with that name and those label pairs
// (key, value, key, value…, in any order), or 0 when it is absent.
func (m Metrics) Get(name string, labels ...string) float64 {
	return m[seriesKey(name, labels)]
}

// Has reports whether the series was exported.
func (m Metrics) Has(name string, labels ...string) bool {
	_, ok := m[seriesKey(name, labels)]
	return ok
}

func seriesKey(name string, labels []string) string {
	if len(labels) == 0 {
		return name
	}
	pairs := make([]string, 0, len(labels)/2)
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, labels[i]+"="+strconv.Quote(labels[i+1]))
	}
	sort.Strings(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// Metrics scrapes the node's /metrics.
func (n *Node) Metrics(t testing.TB) Metrics {
	t.Helper()
	resp, err := http.Get(n.URL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	m, err := ParseMetrics(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	return m
}

// WaitMetric scrapes until the series has the value want, failing the test
// after 5s. Gauges that follow a session's end move a moment after the
// client saw it.
func (n *Node) WaitMetric(t testing.TB, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := n.Metrics(t).Get(name, labels...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", seriesKey(name, labels), got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ParseMetrics reads the Prometheus text format as herald writes it (label
// values without commas or escaped quotes).
func ParseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			return nil, &parseError{line}
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			return nil, &parseError{line}
		}
		series := line[:sp]
		name, rest, hasLabels := strings.Cut(series, "{")
		var labels []string
		if hasLabels {
			for _, kv := range strings.Split(strings.TrimSuffix(rest, "}"), ",") {
				if kv == "" {
					continue
				}
				k, q, ok := strings.Cut(kv, "=")
				val, err := strconv.Unquote(q)
				if !ok || err != nil {
					return nil, &parseError{line}
				}
				labels = append(labels, k, val)
			}
		}
		m[seriesKey(name, labels)] = v
	}
	return m, sc.Err()
}

type parseError struct{ line string }

func (e *parseError) Error() string { return "metrics: cannot parse " + strconv.Quote(e.line) }
