// Package providers lists every webhook provider herald knows. Adding a
// provider is one sub-package of ingress plus one line here.
package providers

import (
	"herald/ingress"
	"herald/ingress/coinify"
	"herald/ingress/gateway"
	"herald/ingress/kriptomat"
	"herald/ingress/partner"
	"herald/ingress/zeroxpay"
)

// All returns every provider, by slug order of the SPEC table.
func All() []ingress.Provider {
	return []ingress.Provider{
		kriptomat.Provider(),
		coinify.Provider(),
		zeroxpay.Provider(),
		partner.Provider(),
		gateway.Provider(),
	}
}
