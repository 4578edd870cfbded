"""fastreco.models"""
