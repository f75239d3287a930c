"""What stands between a request and the routes: run tokens and API keys (`auth`), admission limits (`limits`,
`middleware`) and token redaction in access logs (`redact`)."""
