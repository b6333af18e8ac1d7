"""A generic gRPC client with no .proto at hand, as grpcurl and Postman are: it lists the
services by server reflection, resolves auth.v1.AuthService's messages (and what they import)
from the server's descriptors, then signs up, logs in and validates. Prints one JSON object.

Usage: grpc_reflection_tool.py HOST:PORT EMAIL PASSWORD
"""

import json
import sys

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main():
    target, email, password = sys.argv[1:4]
    channel = grpc.insecure_channel(target)
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    services = [s.name for a in answers for s in a.list_services_response.service]

    pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    service = pool.FindServiceByName("auth.v1.AuthService")

    def call(name, body, metadata=()):
        method = service.FindMethodByName(name)
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        stub = channel.unary_unary(
            f"/auth.v1.AuthService/{name}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        answer = stub(json_format.ParseDict(body, request_type()), metadata=metadata)
        return json_format.MessageToDict(answer, preserving_proto_field_name=True)

    credentials = {"email": email, "password": password}
    call("Signup", credentials)
    tokens = call("Login", credentials)
    validated = call(
        "Validate", {}, metadata=(("authorization", "Bearer " + tokens["access_token"]),)
    )
    try:
        call("Login", {"email": email, "password": "not the password at all"})
        refused = None
    except grpc.RpcError as err:
        refused = err.code().name
    print(
        json.dumps(
            {
                "services": services,
                "methods": [m.name for m in service.methods],
                "token_type": tokens["token_type"],
                "validated_email": validated["email"],
                "claims_sub": validated["claims"]["sub"],
                "wrong_password": refused,
            }
        )
    )


if __name__ == "__main__":
    main()
