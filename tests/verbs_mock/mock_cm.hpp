// The rdma_cm half of the verbs stand-in, implemented inside the libibverbs half (one engine per
// process owns both the queue pairs and their connections); librdmacm's exported functions
// (rdmacm_mock.cpp) forward here. Tests only: see verbs_mock.cpp.
#pragma once

#include <rdma/rdma_cma.h>

#include <cstddef>
#include <cstdint>

namespace rfmock {

rdma_event_channel* create_event_channel();
void destroy_event_channel(rdma_event_channel* ch);
int create_id(rdma_event_channel* ch, rdma_cm_id** id, void* context, rdma_port_space ps);
int destroy_id(rdma_cm_id* id);
int bind_addr(rdma_cm_id* id, sockaddr* addr);
int listen(rdma_cm_id* id, int backlog);
int resolve_addr(rdma_cm_id* id, sockaddr* src, sockaddr* dst, int timeout_ms);
int resolve_route(rdma_cm_id* id, int timeout_ms);
int create_qp(rdma_cm_id* id, ibv_pd* pd, ibv_qp_init_attr* attr);
void destroy_qp(rdma_cm_id* id);
int connect(rdma_cm_id* id, rdma_conn_param* param);
int accept(rdma_cm_id* id, rdma_conn_param* param);
int reject(rdma_cm_id* id, const void* private_data, std::uint8_t len);
int disconnect(rdma_cm_id* id);
int get_cm_event(rdma_event_channel* ch, rdma_cm_event** event);
int ack_cm_event(rdma_cm_event* event);
const char* event_str(rdma_cm_event_type e);
int set_option(rdma_cm_id* id, int level, int optname, void* optval, std::size_t optlen);
std::uint16_t get_src_port(rdma_cm_id* id);
std::uint16_t get_dst_port(rdma_cm_id* id);

}  // namespace rfmock
