from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BridgeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BRIDGE_KIND_UNSPECIFIED: _ClassVar[BridgeKind]
    BRIDGE_KIND_LINUX: _ClassVar[BridgeKind]
    BRIDGE_KIND_OVS: _ClassVar[BridgeKind]

class TunnelType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TUNNEL_TYPE_UNSPECIFIED: _ClassVar[TunnelType]
    TUNNEL_TYPE_VXLAN: _ClassVar[TunnelType]
    TUNNEL_TYPE_GENEVE: _ClassVar[TunnelType]
    TUNNEL_TYPE_GRE: _ClassVar[TunnelType]

class EndpointKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENDPOINT_KIND_UNSPECIFIED: _ClassVar[EndpointKind]
    ENDPOINT_KIND_VETH: _ClassVar[EndpointKind]
    ENDPOINT_KIND_MACVLAN: _ClassVar[EndpointKind]
    ENDPOINT_KIND_PHYS: _ClassVar[EndpointKind]
    ENDPOINT_KIND_DUMMY: _ClassVar[EndpointKind]

class EndpointState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENDPOINT_STATE_UNSPECIFIED: _ClassVar[EndpointState]
    ENDPOINT_STATE_READY: _ClassVar[EndpointState]
    ENDPOINT_STATE_GUEST_MISSING: _ClassVar[EndpointState]
    ENDPOINT_STATE_DEGRADED: _ClassVar[EndpointState]
BRIDGE_KIND_UNSPECIFIED: BridgeKind
BRIDGE_KIND_LINUX: BridgeKind
BRIDGE_KIND_OVS: BridgeKind
TUNNEL_TYPE_UNSPECIFIED: TunnelType
TUNNEL_TYPE_VXLAN: TunnelType
TUNNEL_TYPE_GENEVE: TunnelType
TUNNEL_TYPE_GRE: TunnelType
ENDPOINT_KIND_UNSPECIFIED: EndpointKind
ENDPOINT_KIND_VETH: EndpointKind
ENDPOINT_KIND_MACVLAN: EndpointKind
ENDPOINT_KIND_PHYS: EndpointKind
ENDPOINT_KIND_DUMMY: EndpointKind
ENDPOINT_STATE_UNSPECIFIED: EndpointState
ENDPOINT_STATE_READY: EndpointState
ENDPOINT_STATE_GUEST_MISSING: EndpointState
ENDPOINT_STATE_DEGRADED: EndpointState

class BridgeSpec(_message.Message):
    __slots__ = ("name", "kind", "addresses", "mtu", "vni", "tunnel")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    VNI_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: BridgeKind
    addresses: _containers.RepeatedScalarFieldContainer[str]
    mtu: int
    vni: int
    tunnel: TunnelType
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[BridgeKind, str]] = ..., addresses: _Optional[_Iterable[str]] = ..., mtu: _Optional[int] = ..., vni: _Optional[int] = ..., tunnel: _Optional[_Union[TunnelType, str]] = ...) -> None: ...

class Bridge(_message.Message):
    __slots__ = ("spec", "owned", "present", "mtu", "endpoint_count", "datapath_type", "endpoint_mtu", "created")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    OWNED_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_COUNT_FIELD_NUMBER: _ClassVar[int]
    DATAPATH_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_MTU_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    spec: BridgeSpec
    owned: bool
    present: bool
    mtu: int
    endpoint_count: int
    datapath_type: str
    endpoint_mtu: int
    created: bool
    def __init__(self, spec: _Optional[_Union[BridgeSpec, _Mapping]] = ..., owned: _Optional[bool] = ..., present: _Optional[bool] = ..., mtu: _Optional[int] = ..., endpoint_count: _Optional[int] = ..., datapath_type: _Optional[str] = ..., endpoint_mtu: _Optional[int] = ..., created: _Optional[bool] = ...) -> None: ...

class CreateBridgeRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: BridgeSpec
    def __init__(self, spec: _Optional[_Union[BridgeSpec, _Mapping]] = ...) -> None: ...

class DeleteBridgeRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteBridgeResponse(_message.Message):
    __slots__ = ("existed", "deleted_link")
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    DELETED_LINK_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    deleted_link: bool
    def __init__(self, existed: _Optional[bool] = ..., deleted_link: _Optional[bool] = ...) -> None: ...

class ListBridgesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBridgesResponse(_message.Message):
    __slots__ = ("bridges",)
    BRIDGES_FIELD_NUMBER: _ClassVar[int]
    bridges: _containers.RepeatedCompositeFieldContainer[Bridge]
    def __init__(self, bridges: _Optional[_Iterable[_Union[Bridge, _Mapping]]] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("destination", "via", "metric")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    VIA_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    destination: str
    via: str
    metric: int
    def __init__(self, destination: _Optional[str] = ..., via: _Optional[str] = ..., metric: _Optional[int] = ...) -> None: ...

class Dhcp(_message.Message):
    __slots__ = ("client", "options", "keep")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    client: str
    options: _containers.RepeatedScalarFieldContainer[str]
    keep: bool
    def __init__(self, client: _Optional[str] = ..., options: _Optional[_Iterable[str]] = ..., keep: _Optional[bool] = ...) -> None: ...

class EndpointSpec(_message.Message):
    __slots__ = ("bridge", "guest", "ifname", "host_ifname", "mac", "mtu", "vlan", "addresses", "gateways", "routes", "name", "dhcp", "kind", "parent")
    BRIDGE_FIELD_NUMBER: _ClassVar[int]
    GUEST_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    HOST_IFNAME_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    VLAN_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    GATEWAYS_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DHCP_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    bridge: str
    guest: str
    ifname: str
    host_ifname: str
    mac: str
    mtu: int
    vlan: int
    addresses: _containers.RepeatedScalarFieldContainer[str]
    gateways: _containers.RepeatedScalarFieldContainer[str]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    name: str
    dhcp: Dhcp
    kind: EndpointKind
    parent: str
    def __init__(self, bridge: _Optional[str] = ..., guest: _Optional[str] = ..., ifname: _Optional[str] = ..., host_ifname: _Optional[str] = ..., mac: _Optional[str] = ..., mtu: _Optional[int] = ..., vlan: _Optional[int] = ..., addresses: _Optional[_Iterable[str]] = ..., gateways: _Optional[_Iterable[str]] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., name: _Optional[str] = ..., dhcp: _Optional[_Union[Dhcp, _Mapping]] = ..., kind: _Optional[_Union[EndpointKind, str]] = ..., parent: _Optional[str] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("spec", "id", "guest", "ifname", "host_ifname", "mac", "mtu", "addresses", "routes", "state", "netns_path", "bridge", "vlan", "state_detail", "guest_name", "rules", "tc", "parent")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    GUEST_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    HOST_IFNAME_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NETNS_PATH_FIELD_NUMBER: _ClassVar[int]
    BRIDGE_FIELD_NUMBER: _ClassVar[int]
    VLAN_FIELD_NUMBER: _ClassVar[int]
    STATE_DETAIL_FIELD_NUMBER: _ClassVar[int]
    GUEST_NAME_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    TC_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    spec: EndpointSpec
    id: str
    guest: str
    ifname: str
    host_ifname: str
    mac: str
    mtu: int
    addresses: _containers.RepeatedScalarFieldContainer[str]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    state: EndpointState
    netns_path: str
    bridge: str
    vlan: int
    state_detail: str
    guest_name: str
    rules: _containers.RepeatedScalarFieldContainer[str]
    tc: _containers.RepeatedCompositeFieldContainer[TcCommand]
    parent: str
    def __init__(self, spec: _Optional[_Union[EndpointSpec, _Mapping]] = ..., id: _Optional[str] = ..., guest: _Optional[str] = ..., ifname: _Optional[str] = ..., host_ifname: _Optional[str] = ..., mac: _Optional[str] = ..., mtu: _Optional[int] = ..., addresses: _Optional[_Iterable[str]] = ..., routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., state: _Optional[_Union[EndpointState, str]] = ..., netns_path: _Optional[str] = ..., bridge: _Optional[str] = ..., vlan: _Optional[int] = ..., state_detail: _Optional[str] = ..., guest_name: _Optional[str] = ..., rules: _Optional[_Iterable[str]] = ..., tc: _Optional[_Iterable[_Union[TcCommand, _Mapping]]] = ..., parent: _Optional[str] = ...) -> None: ...

class TcCommand(_message.Message):
    __slots__ = ("args",)
    ARGS_FIELD_NUMBER: _ClassVar[int]
    args: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, args: _Optional[_Iterable[str]] = ...) -> None: ...

class GuestCommandRequest(_message.Message):
    __slots__ = ("guest", "ifname", "tool", "args")
    GUEST_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    guest: str
    ifname: str
    tool: str
    args: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, guest: _Optional[str] = ..., ifname: _Optional[str] = ..., tool: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ...) -> None: ...

class AttachRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: EndpointSpec
    def __init__(self, spec: _Optional[_Union[EndpointSpec, _Mapping]] = ...) -> None: ...

class DetachRequest(_message.Message):
    __slots__ = ("guest", "ifname")
    GUEST_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    guest: str
    ifname: str
    def __init__(self, guest: _Optional[str] = ..., ifname: _Optional[str] = ...) -> None: ...

class DetachResponse(_message.Message):
    __slots__ = ("detached",)
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    detached: _containers.RepeatedCompositeFieldContainer[Endpoint]
    def __init__(self, detached: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ...) -> None: ...

class GetEndpointRequest(_message.Message):
    __slots__ = ("guest", "ifname")
    GUEST_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    guest: str
    ifname: str
    def __init__(self, guest: _Optional[str] = ..., ifname: _Optional[str] = ...) -> None: ...

class ListEndpointsRequest(_message.Message):
    __slots__ = ("bridge", "guest")
    BRIDGE_FIELD_NUMBER: _ClassVar[int]
    GUEST_FIELD_NUMBER: _ClassVar[int]
    bridge: str
    guest: str
    def __init__(self, bridge: _Optional[str] = ..., guest: _Optional[str] = ...) -> None: ...

class ListEndpointsResponse(_message.Message):
    __slots__ = ("endpoints",)
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    def __init__(self, endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ...) -> None: ...

class AddRouteRequest(_message.Message):
    __slots__ = ("guest", "ifname", "route")
    GUEST_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    guest: str
    ifname: str
    route: Route
    def __init__(self, guest: _Optional[str] = ..., ifname: _Optional[str] = ..., route: _Optional[_Union[Route, _Mapping]] = ...) -> None: ...

class DeleteRouteRequest(_message.Message):
    __slots__ = ("guest", "ifname", "destination")
    GUEST_FIELD_NUMBER: _ClassVar[int]
    IFNAME_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    guest: str
    ifname: str
    destination: str
    def __init__(self, guest: _Optional[str] = ..., ifname: _Optional[str] = ..., destination: _Optional[str] = ...) -> None: ...

class Drift(_message.Message):
    __slots__ = ("object", "name", "detail", "repair")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FIELD_NUMBER: _ClassVar[int]
    object: str
    name: str
    detail: str
    repair: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, object: _Optional[str] = ..., name: _Optional[str] = ..., detail: _Optional[str] = ..., repair: _Optional[_Iterable[str]] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("drift",)
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    drift: _containers.RepeatedCompositeFieldContainer[Drift]
    def __init__(self, drift: _Optional[_Iterable[_Union[Drift, _Mapping]]] = ...) -> None: ...

class ReconcileRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReconcileResponse(_message.Message):
    __slots__ = ("repaired", "failed", "collected")
    REPAIRED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    COLLECTED_FIELD_NUMBER: _ClassVar[int]
    repaired: _containers.RepeatedCompositeFieldContainer[Drift]
    failed: _containers.RepeatedCompositeFieldContainer[Drift]
    collected: _containers.RepeatedCompositeFieldContainer[Drift]
    def __init__(self, repaired: _Optional[_Iterable[_Union[Drift, _Mapping]]] = ..., failed: _Optional[_Iterable[_Union[Drift, _Mapping]]] = ..., collected: _Optional[_Iterable[_Union[Drift, _Mapping]]] = ...) -> None: ...

class AddPeerRequest(_message.Message):
    __slots__ = ("address", "name")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    address: str
    name: str
    def __init__(self, address: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Peer(_message.Message):
    __slots__ = ("address", "name", "source", "tunnels")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TUNNELS_FIELD_NUMBER: _ClassVar[int]
    address: str
    name: str
    source: str
    tunnels: _containers.RepeatedCompositeFieldContainer[Tunnel]
    def __init__(self, address: _Optional[str] = ..., name: _Optional[str] = ..., source: _Optional[str] = ..., tunnels: _Optional[_Iterable[_Union[Tunnel, _Mapping]]] = ...) -> None: ...

class Tunnel(_message.Message):
    __slots__ = ("bridge", "vni", "type", "port", "state")
    BRIDGE_FIELD_NUMBER: _ClassVar[int]
    VNI_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    bridge: str
    vni: int
    type: TunnelType
    port: str
    state: str
    def __init__(self, bridge: _Optional[str] = ..., vni: _Optional[int] = ..., type: _Optional[_Union[TunnelType, str]] = ..., port: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class AddPeersRequest(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[AddPeerRequest]
    def __init__(self, peers: _Optional[_Iterable[_Union[AddPeerRequest, _Mapping]]] = ...) -> None: ...

class RemovePeerRequest(_message.Message):
    __slots__ = ("peer",)
    PEER_FIELD_NUMBER: _ClassVar[int]
    peer: str
    def __init__(self, peer: _Optional[str] = ...) -> None: ...

class RemovePeerResponse(_message.Message):
    __slots__ = ("existed",)
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: _Optional[bool] = ...) -> None: ...

class ListPeersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPeersResponse(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    def __init__(self, peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ...) -> None: ...

class NetworkSpec(_message.Message):
    __slots__ = ("name", "subnet", "vni", "kind", "tunnel", "gateway", "dns_address")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUBNET_FIELD_NUMBER: _ClassVar[int]
    VNI_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    DNS_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    subnet: str
    vni: int
    kind: BridgeKind
    tunnel: TunnelType
    gateway: str
    dns_address: str
    def __init__(self, name: _Optional[str] = ..., subnet: _Optional[str] = ..., vni: _Optional[int] = ..., kind: _Optional[_Union[BridgeKind, str]] = ..., tunnel: _Optional[_Union[TunnelType, str]] = ..., gateway: _Optional[str] = ..., dns_address: _Optional[str] = ...) -> None: ...

class Network(_message.Message):
    __slots__ = ("spec", "allocated")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    spec: NetworkSpec
    allocated: int
    def __init__(self, spec: _Optional[_Union[NetworkSpec, _Mapping]] = ..., allocated: _Optional[int] = ...) -> None: ...

class CreateNetworkRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: NetworkSpec
    def __init__(self, spec: _Optional[_Union[NetworkSpec, _Mapping]] = ...) -> None: ...

class DeleteNetworkRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteNetworkResponse(_message.Message):
    __slots__ = ("existed",)
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: _Optional[bool] = ...) -> None: ...

class ListNetworksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNetworksResponse(_message.Message):
    __slots__ = ("networks",)
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    networks: _containers.RepeatedCompositeFieldContainer[Network]
    def __init__(self, networks: _Optional[_Iterable[_Union[Network, _Mapping]]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Dependency(_message.Message):
    __slots__ = ("name", "up", "enabled", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    up: bool
    enabled: bool
    detail: str
    def __init__(self, name: _Optional[str] = ..., up: _Optional[bool] = ..., enabled: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class KernelFeature(_message.Message):
    __slots__ = ("name", "available")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    available: bool
    def __init__(self, name: _Optional[str] = ..., available: _Optional[bool] = ...) -> None: ...

class HostStatus(_message.Message):
    __slots__ = ("version", "hostname", "uptime_seconds", "bridges", "endpoints", "peers", "dependencies", "kernel_features", "state_dir", "mode", "endpoints_not_ready", "ovs_datapath_type")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BRIDGES_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FEATURES_FIELD_NUMBER: _ClassVar[int]
    STATE_DIR_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_NOT_READY_FIELD_NUMBER: _ClassVar[int]
    OVS_DATAPATH_TYPE_FIELD_NUMBER: _ClassVar[int]
    version: str
    hostname: str
    uptime_seconds: int
    bridges: int
    endpoints: int
    peers: int
    dependencies: _containers.RepeatedCompositeFieldContainer[Dependency]
    kernel_features: _containers.RepeatedCompositeFieldContainer[KernelFeature]
    state_dir: str
    mode: str
    endpoints_not_ready: int
    ovs_datapath_type: str
    def __init__(self, version: _Optional[str] = ..., hostname: _Optional[str] = ..., uptime_seconds: _Optional[int] = ..., bridges: _Optional[int] = ..., endpoints: _Optional[int] = ..., peers: _Optional[int] = ..., dependencies: _Optional[_Iterable[_Union[Dependency, _Mapping]]] = ..., kernel_features: _Optional[_Iterable[_Union[KernelFeature, _Mapping]]] = ..., state_dir: _Optional[str] = ..., mode: _Optional[str] = ..., endpoints_not_ready: _Optional[int] = ..., ovs_datapath_type: _Optional[str] = ...) -> None: ...
