"""Push delivery: the pusher pool (pool.py), HTTP pushers to push gateways
(http.py) and email (mailer.py: notification mails, validation mails)."""
