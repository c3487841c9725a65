module herald

go 1.26

require (
	github.com/coder/websocket v1.8.15 // indirect
	github.com/golang-jwt/jwt/v5 v5.3.1 // indirect
	github.com/shopspring/decimal v1.6.0 // indirect
)
