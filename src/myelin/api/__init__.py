"""REST servlets. Each module declares a RouteTable; they stay thin: parse,
call a handler, answer."""
