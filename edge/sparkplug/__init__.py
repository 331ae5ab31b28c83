"""Sparkplug B edge node (optional extra ``sparkplug``: the ``protobuf`` package).

``sparkplug_b_pb2`` is generated from ``sparkplug_b.proto`` (Eclipse Tahu's wire layout) with
grpcio-tools' protoc; the command is in the .proto's header. ``metrics``: what is published;
``node``: the connection, births, data and commands.
"""
