// Package auth verifies the JWTs that clients present to the websocket
// endpoint and turns their claims into channel grants.
//
// A Verifier is built once from configuration: either an HMAC secret
// (HS256/384/512) or a PEM public key (RSA → RS256/384/512, ECDSA →
// ES256/384/512 by curve, Ed25519 → EdDSA). Only the algorithms of the
// configured key kind are accepted, so "alg: none" and HS/RS confusion are
// rejected before any signature is checked. "sub" and "exp" are required;
// "iss" and "aud" are checked when configured.
package auth
