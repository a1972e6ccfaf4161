"""Federation: talking to other homeservers (client, discovery, keys, auth) and
handling what they send us."""
