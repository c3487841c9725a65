// Package deploy_test checks the deployment files against real processes:
// deploy/nginx.conf runs with Debian's nginx in front of two nodes that
// share a real redis-server, and docker-compose.yml and the Dockerfile are
// parsed and held to what the nodes need. No Docker engine is involved.
package deploy_test
