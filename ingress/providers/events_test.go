package providers_test

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"herald/ingress"
	"herald/ingress/providers"
	"herald/internal/heraldtest"
)

// table is one provider's section of docs/EVENTS.md: for each event type
// its rows' status cells.
type table map[string][]string

var backticked = regexp.MustCompile("`([^`]+)`")

// readTables parses docs/EVENTS.md: every "## <slug>" section's markdown
// tables, by their "type" and "status" columns.
func readTables(t *testing.T) map[string]table {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(heraldtest.Root(t), "docs", "EVENTS.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]table{}
	var section string
	typeCol, statusCol := -1, -1
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "## "); ok {
			section = strings.TrimSpace(name)
			out[section] = table{}
			continue
		}
		if !strings.HasPrefix(line, "|") {
			typeCol, statusCol = -1, -1
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		switch {
		case typeCol < 0:
			for i, c := range cells {
				switch c {
				case "type":
					typeCol = i
				case "status":
					statusCol = i
				}
			}
			if typeCol < 0 || statusCol < 0 {
				typeCol, statusCol = 99, 99 // a table of something else
			}
		case strings.HasPrefix(cells[0], "---") || typeCol >= len(cells) || statusCol >= len(cells) || section == "":
		default:
			for _, m := range backticked.FindAllStringSubmatch(cells[typeCol], -1) {
				out[section][m[1]] = append(out[section][m[1]], cells[statusCol])
			}
		}
	}
	return out
}

// The event table and the adapters agree: every event a fixture becomes is
// in its provider's table with its status, and every type in the table is
// what some fixture becomes. Adding an event to either alone fails here.
func TestEventTableMatchesAdapters(t *testing.T) {
	tables := readTables(t)
	for _, p := range providers.All() {
		t.Run(p.Slug, func(t *testing.T) {
			tab, ok := tables[p.Slug]
			if !ok || len(tab) == 0 {
				t.Fatalf("docs/EVENTS.md has no table under \"## %s\"", p.Slug)
			}
			produced := map[string]bool{}
			fixtures := heraldtest.Fixtures(t, p.Slug)
			names := make([]string, 0, len(fixtures))
			for name := range fixtures {
				names = append(names, name)
			}
			sort.Strings(names)
			for _, name := range names {
				ev, err := p.Parse(&ingress.Request{Body: fixtures[name], Config: ingress.Config{Secret: "s"}, Now: time.Now()})
				if strings.HasPrefix(name, "bad_") {
					continue
				}
				if err != nil {
					t.Errorf("fixture %s: %v", name, err)
					continue
				}
				produced[ev.Type] = true
				cells, ok := tab[ev.Type]
				if !ok {
					t.Errorf("fixture %s becomes %s, which the table does not list", name, ev.Type)
					continue
				}
				if !mentions(cells, ev.Status) {
					t.Errorf("fixture %s becomes %s %s; the table's status for %s says %q", name, ev.Type, ev.Status, ev.Type, cells)
				}
			}
			for typ := range tab {
				if !produced[typ] {
					t.Errorf("the table lists %s but no fixture becomes it", typ)
				}
			}
		})
	}
	for section := range tables {
		found := false
		for _, p := range providers.All() {
			found = found || p.Slug == section
		}
		if !found && len(tables[section]) > 0 {
			t.Errorf("docs/EVENTS.md has an event table for %q, which is no provider", section)
		}
	}
}

func mentions(cells []string, status string) bool {
	word := regexp.MustCompile(`\b` + status + `\b`)
	for _, c := range cells {
		if word.MatchString(c) {
			return true
		}
	}
	return false
}
