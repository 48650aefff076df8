// librdmacm.so.1 of the verbs stand-in (tests only): each exported function forwards to the
// engine in the libibverbs half (verbs_mock.cpp), which owns queue pairs and connections.
#include "mock_cm.hpp"

extern "C" {

rdma_event_channel* rdma_create_event_channel(void) { return rfmock::create_event_channel(); }
void rdma_destroy_event_channel(rdma_event_channel* ch) { rfmock::destroy_event_channel(ch); }
int rdma_create_id(rdma_event_channel* ch, rdma_cm_id** id, void* context, enum rdma_port_space ps) {
  return rfmock::create_id(ch, id, context, ps);
}
int rdma_destroy_id(rdma_cm_id* id) { return rfmock::destroy_id(id); }
int rdma_bind_addr(rdma_cm_id* id, struct sockaddr* addr) { return rfmock::bind_addr(id, addr); }
int rdma_listen(rdma_cm_id* id, int backlog) { return rfmock::listen(id, backlog); }
int rdma_resolve_addr(rdma_cm_id* id, struct sockaddr* src, struct sockaddr* dst, int timeout_ms) {
  return rfmock::resolve_addr(id, src, dst, timeout_ms);
}
int rdma_resolve_route(rdma_cm_id* id, int timeout_ms) { return rfmock::resolve_route(id, timeout_ms); }
int rdma_create_qp(rdma_cm_id* id, struct ibv_pd* pd, struct ibv_qp_init_attr* attr) { return rfmock::create_qp(id, pd, attr); }
void rdma_destroy_qp(rdma_cm_id* id) { rfmock::destroy_qp(id); }
int rdma_connect(rdma_cm_id* id, struct rdma_conn_param* param) { return rfmock::connect(id, param); }
int rdma_accept(rdma_cm_id* id, struct rdma_conn_param* param) { return rfmock::accept(id, param); }
int rdma_reject(rdma_cm_id* id, const void* data, uint8_t len) { return rfmock::reject(id, data, len); }
int rdma_disconnect(rdma_cm_id* id) { return rfmock::disconnect(id); }
int rdma_get_cm_event(rdma_event_channel* ch, struct rdma_cm_event** event) { return rfmock::get_cm_event(ch, event); }
int rdma_ack_cm_event(struct rdma_cm_event* event) { return rfmock::ack_cm_event(event); }
const char* rdma_event_str(enum rdma_cm_event_type event) { return rfmock::event_str(event); }
int rdma_set_option(rdma_cm_id* id, int level, int optname, void* optval, size_t optlen) {
  return rfmock::set_option(id, level, optname, optval, optlen);
}
uint16_t rdma_get_src_port(rdma_cm_id* id) { return rfmock::get_src_port(id); }
uint16_t rdma_get_dst_port(rdma_cm_id* id) { return rfmock::get_dst_port(id); }

}  // extern "C"
