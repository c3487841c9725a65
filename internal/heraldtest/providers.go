package heraldtest

import "herald/ingress/providers"

// Providers returns every provider slug.
func Providers() []string {
	var out []string
	for _, p := range providers.All() {
		out = append(out, p.Slug)
	}
	return out
}
