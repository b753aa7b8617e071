"""Webhooks: word when work is done (services: writes, the receiver of run ends, the
delivery the actor runs; outbound: the one HTTP request, kept off the server's own network;
views: the owners' page)."""
