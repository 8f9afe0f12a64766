"""The Label Studio ML backend protocol over HTTP: the server, its auth and its /metrics page, and the
`/predict` deadline. The prediction itself is `prelabel.prediction`."""
