// Package ingress receives provider webhooks at POST /ingress/<provider>,
// authenticates them, normalizes each into an Event and appends it to the
// channels it concerns.
//
// The framework (this package) owns everything providers have in common:
// the 1 MiB body limit, the CIDR allow list, shared-secret and signature
// checks in constant time, deduplication of retries, dead letters and the
// outcome table of SPEC §3. A provider is a Provider value, one
// sub-package each (ingress/kriptomat, …), listed in ingress/providers.
// Its Parse turns an authenticated body into one Event or says why not
// (ErrMalformed → 400, ErrUnknownEvent → 202 dead letter).
//
// Money never becomes a float: adapters decode with UseNumber and build
// amounts with Amount, which validates with decimal but keeps the provider's
// own digits.
package ingress
