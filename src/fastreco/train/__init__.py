"""fastreco.train"""
